//! JUnit XML of a suite (`udplab suite --junit`): one testcase per scenario, one `<failure>` per
//! failed threshold or regressed metric, one `<error>` per threshold that could not be measured
//! (and for a scenario that could not run), in the layout of the Jenkins xunit plugin's
//! `junit-10.xsd`, which GitHub, GitLab and Jenkins read.

use std::fmt::Write as _;

use super::{ScenarioResult, SuiteDocument};
use crate::run::describe_check;

/// Escapes text for an XML attribute or element (quotes too, so both are safe), dropping the
/// control characters XML 1.0 cannot carry.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 => {}
            c => out.push(c),
        }
    }
    out
}

/// A failure or error element of one testcase.
struct Problem {
    element: &'static str,
    kind: &'static str,
    message: String,
}

fn problems(s: &ScenarioResult) -> Vec<Problem> {
    let mut out = Vec::new();
    if let Some(e) = &s.error {
        out.push(Problem {
            element: "error",
            kind: "setup",
            message: e.clone(),
        });
    }
    for c in &s.thresholds {
        if c.passed {
            continue;
        }
        let (element, kind) = if c.measured.is_some() {
            ("failure", "threshold")
        } else {
            ("error", "incomplete")
        };
        let mut message = format!("{}: {}", c.name, describe_check(c, s.is_reliable()));
        if s.repeat > 1 && c.measured.is_some() {
            message.push_str(&format!(" (median of {} repeats)", s.repeat));
        }
        out.push(Problem {
            element,
            kind,
            message,
        });
    }
    for c in &s.regressions {
        if c.verdict == super::compare::ChangeVerdict::Regressed {
            out.push(Problem {
                element: "failure",
                kind: "regression",
                message: super::compare::describe_regression(c),
            });
        }
    }
    out
}

/// The JUnit document of `suite`. `hostname` and `timestamp` (`YYYY-MM-DDTHH:MM:SS`) are the
/// caller's, so the writer stays deterministic.
pub fn write_junit(
    suite: &SuiteDocument,
    suite_name: &str,
    hostname: &str,
    timestamp: &str,
) -> String {
    let all: Vec<Vec<Problem>> = suite.scenarios.iter().map(problems).collect();
    let failures = all
        .iter()
        .filter(|p| p.iter().any(|p| p.element == "failure"))
        .count();
    let errors = all
        .iter()
        .filter(|p| !p.is_empty() && p.iter().all(|p| p.element == "error"))
        .count();
    let tests = suite.scenarios.len();
    let time: f64 = suite.scenarios.iter().map(|s| s.time_s).sum();
    let mut x = String::new();
    let _ = writeln!(x, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        x,
        r#"<testsuites name="udplab suite" tests="{tests}" failures="{failures}" errors="{errors}" time="{time:.3}">"#
    );
    let _ = writeln!(
        x,
        r#"  <testsuite name="{}" tests="{tests}" failures="{failures}" errors="{errors}" skipped="0" time="{time:.3}" timestamp="{}" hostname="{}">"#,
        escape(suite_name),
        escape(timestamp),
        escape(hostname)
    );
    let _ = writeln!(x, "    <properties>");
    let _ = writeln!(
        x,
        r#"      <property name="command" value="{}"/>"#,
        escape(&suite.header.command)
    );
    for (k, v) in &suite.labels {
        let _ = writeln!(
            x,
            r#"      <property name="label.{}" value="{}"/>"#,
            escape(k),
            escape(v)
        );
    }
    let _ = writeln!(x, "    </properties>");
    for (s, problems) in suite.scenarios.iter().zip(&all) {
        let _ = write!(
            x,
            r#"    <testcase name="{}" classname="udplab.{}" time="{:.3}""#,
            escape(&s.name),
            escape(suite_name),
            s.time_s
        );
        let _ = writeln!(x, ">");
        for p in problems {
            let _ = writeln!(
                x,
                r#"      <{el} type="{}" message="{msg}">{msg}</{el}>"#,
                p.kind,
                el = p.element,
                msg = escape(&p.message)
            );
        }
        let verdict = if s.error.is_some() {
            "error"
        } else {
            s.verdict.as_str()
        };
        let _ = writeln!(
            x,
            "      <system-out>{}\nverdict: {verdict}</system-out>",
            escape(&s.command)
        );
        let _ = writeln!(x, "    </testcase>");
    }
    let _ = writeln!(x, "  </testsuite>");
    let _ = writeln!(x, "</testsuites>");
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_quotes_and_control_characters() {
        assert_eq!(escape("a<b>&\"c'\u{1}\n"), "a&lt;b&gt;&amp;&quot;c&apos;\n");
    }
}
