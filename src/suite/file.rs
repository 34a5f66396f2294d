//! Suite files (TOML): `[[scenario]]` tables turned into `udplab loopback|send` argument
//! vectors that clap parses, so every option of those commands works in a suite and its errors
//! are the CLI's own; every error names the key and its line.

use clap::CommandFactory;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::cli::Cli;
use crate::error::UsageError;

/// Most repeats of one scenario.
pub const MAX_REPEAT: u64 = 1000;

/// Keys of a scenario that are the suite's, not options of the command.
const SUITE_KEYS: [&str; 3] = ["name", "repeat", "target"];

/// Options whose output the suite writes itself (`udplab suite --json/--csv`).
const REFUSED_OPTIONS: [&str; 7] = [
    "json",
    "csv",
    "intervals-csv",
    "intervals-json",
    "loss-log",
    "quiet",
    "help",
];

/// One named scenario of a suite file.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub name: String,
    /// Line of its `[[scenario]]` header.
    pub line: usize,
    /// How many times it runs; thresholds apply to the median over the repeats.
    pub repeat: u32,
    /// `udplab send` to this receiver; None: `udplab loopback`.
    pub target: Option<String>,
    /// The command line it stands for, program name first, e.g.
    /// `["udplab", "loopback", "--count=2000"]`: what clap parses.
    pub argv: Vec<String>,
    /// Line of each option key in `argv` (by long name), to place clap's errors.
    pub key_lines: Vec<(String, usize)>,
}

impl Scenario {
    /// The command as a user would type it (for reports).
    pub fn command(&self) -> String {
        self.argv
            .iter()
            .map(|a| crate::report::shell_quote(a))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Parses `argv` with the CLI; an error names the scenario and the line of the key at
    /// fault (else the scenario's header line).
    pub fn parse_command(&self) -> Result<crate::cli::Command, UsageError> {
        use clap::Parser;
        use clap::error::{ContextKind, ContextValue};
        match Cli::try_parse_from(&self.argv) {
            Ok(cli) => Ok(cli.command),
            Err(e) => {
                let line = match e.get(ContextKind::InvalidArg) {
                    Some(ContextValue::String(arg)) => {
                        let long = arg
                            .trim_start_matches('-')
                            .split([' ', '='])
                            .next()
                            .unwrap_or("");
                        self.line_of(long)
                    }
                    _ => self.line,
                };
                let text = e.render().to_string();
                let first = text
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim_start_matches("error: ");
                Err(UsageError(format!(
                    "line {line}: scenario \"{}\": {first}",
                    self.name
                )))
            }
        }
    }

    /// The line of option `long`'s key, else the header's.
    pub fn line_of(&self, long: &str) -> usize {
        self.key_lines
            .iter()
            .find(|(k, _)| k == long)
            .map_or(self.line, |(_, l)| *l)
    }
}

/// The key and value of `key` in `fields`.
fn field<'a, 'i>(
    fields: &'a DeTable<'i>,
    key: &str,
) -> Option<(
    &'a Spanned<toml::de::DeString<'i>>,
    &'a Spanned<DeValue<'i>>,
)> {
    fields.iter().find(|(k, _)| k.get_ref().as_ref() == key)
}

/// 1-based line of byte `offset` in `text`.
fn line_at(text: &str, offset: usize) -> usize {
    text.get(..offset).unwrap_or(text).matches('\n').count() + 1
}

/// Parses a suite file's text into its scenarios, in file order. Errors start with
/// `line N:` and name the key.
pub fn parse(text: &str) -> Result<Vec<Scenario>, UsageError> {
    let root = DeTable::parse(text).map_err(|e| {
        let line = e.span().map_or(1, |s| line_at(text, s.start));
        UsageError(format!("line {line}: {}", e.message().trim()))
    })?;
    let mut scenarios: Vec<Scenario> = Vec::new();
    for (key, value) in root.get_ref() {
        let line = line_at(text, key.span().start);
        if key.get_ref().as_ref() != "scenario" {
            return Err(UsageError(format!(
                "line {line}: unknown key `{}` (a suite file holds [[scenario]] tables)",
                key.get_ref()
            )));
        }
        let Some(tables) = value.get_ref().as_array() else {
            return Err(UsageError(format!(
                "line {line}: `scenario` must be an array of tables: write [[scenario]]"
            )));
        };
        for table in tables.iter() {
            let header = line_at(text, table.span().start);
            let Some(fields) = table.get_ref().as_table() else {
                return Err(UsageError(format!(
                    "line {header}: each scenario must be a table: write [[scenario]]"
                )));
            };
            let scenario = scenario(text, header, fields)?;
            if let Some(other) = scenarios.iter().find(|s| s.name == scenario.name) {
                return Err(UsageError(format!(
                    "line {header}: scenario name \"{}\" is already used on line {}",
                    scenario.name, other.line
                )));
            }
            scenarios.push(scenario);
        }
    }
    if scenarios.is_empty() {
        return Err(UsageError(
            "no scenario: add at least one [[scenario]] table with a name".into(),
        ));
    }
    Ok(scenarios)
}

fn scenario(text: &str, header: usize, fields: &DeTable<'_>) -> Result<Scenario, UsageError> {
    let string = |key: &str| -> Result<Option<(String, usize)>, UsageError> {
        let Some((k, v)) = field(fields, key) else {
            return Ok(None);
        };
        let line = line_at(text, k.span().start);
        match v.get_ref().as_str() {
            Some(s) => Ok(Some((s.to_string(), line))),
            None => Err(UsageError(format!(
                "line {line}: `{key}` must be a string, like {key} = \"...\""
            ))),
        }
    };
    let Some((name, name_line)) = string("name")? else {
        return Err(UsageError(format!(
            "line {header}: scenario without a `name` (add name = \"...\")"
        )));
    };
    if name.trim().is_empty() {
        return Err(UsageError(format!(
            "line {name_line}: `name` must not be empty"
        )));
    }
    let target = string("target")?.map(|(t, _)| t);
    let repeat = match field(fields, "repeat") {
        None => 1,
        Some((k, v)) => {
            let line = line_at(text, k.span().start);
            match v.get_ref().as_integer().map(|i| i.as_str().parse::<u64>()) {
                Some(Ok(n)) if (1..=MAX_REPEAT).contains(&n) => n as u32,
                _ => {
                    return Err(UsageError(format!(
                        "line {line}: `repeat` must be a whole number from 1 to {MAX_REPEAT}"
                    )));
                }
            }
        }
    };
    let subcommand = if target.is_some() { "send" } else { "loopback" };
    let cli = Cli::command();
    let command = cli
        .find_subcommand(subcommand)
        .expect("the CLI has send and loopback");
    let mut argv = vec!["udplab".to_string(), subcommand.to_string()];
    if let Some(t) = &target {
        argv.push(t.clone());
    }
    let mut key_lines = Vec::new();
    for (key, value) in fields {
        let written = key.get_ref().as_ref();
        if SUITE_KEYS.contains(&written) {
            continue;
        }
        let line = line_at(text, key.span().start);
        // TOML users write max_loss as often as max-loss: both name --max-loss.
        let long = written.replace('_', "-");
        if REFUSED_OPTIONS.contains(&long.as_str()) {
            return Err(UsageError(format!(
                "line {line}: `{written}`: the suite writes the reports; use `udplab suite \
                 --json/--csv/--junit` instead"
            )));
        }
        let Some(arg) = command
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()))
        else {
            return Err(UsageError(format!(
                "line {line}: unknown key `{written}` in scenario \"{name}\": not an option of \
                 `udplab {subcommand}` (see `udplab {subcommand} --help`), nor name, repeat or \
                 target"
            )));
        };
        key_lines.push((long.clone(), line));
        let takes_value = arg.get_action().takes_values();
        let many = matches!(arg.get_action(), clap::ArgAction::Append);
        push_value(&mut argv, &long, written, line, value, takes_value, many)?;
    }
    Ok(Scenario {
        name,
        line: header,
        repeat,
        target,
        argv,
        key_lines,
    })
}

/// Appends `--long=value` (or the bare flag) for one key.
fn push_value(
    argv: &mut Vec<String>,
    long: &str,
    written: &str,
    line: usize,
    value: &Spanned<DeValue<'_>>,
    takes_value: bool,
    many: bool,
) -> Result<(), UsageError> {
    let scalar = |v: &DeValue<'_>| -> Option<String> {
        match v {
            DeValue::String(s) => Some(s.to_string()),
            DeValue::Integer(i) => Some(i.as_str().to_string()),
            DeValue::Float(f) => Some(f.as_str().to_string()),
            _ => None,
        }
    };
    match value.get_ref() {
        DeValue::Boolean(on) if !takes_value => {
            if *on {
                argv.push(format!("--{long}"));
            }
            Ok(())
        }
        _ if !takes_value => Err(UsageError(format!(
            "line {line}: `{written}` is a switch: write {written} = true"
        ))),
        DeValue::Array(items) if many => {
            for item in items.iter() {
                let Some(v) = scalar(item.get_ref()) else {
                    return Err(UsageError(format!(
                        "line {line}: `{written}`: each element must be a string or a number"
                    )));
                };
                argv.push(format!("--{long}={v}"));
            }
            Ok(())
        }
        other => match scalar(other) {
            Some(v) => {
                argv.push(format!("--{long}={v}"));
                Ok(())
            }
            None => Err(UsageError(format!(
                "line {line}: `{written}` takes one value (a string or a number{})",
                if many { ", or an array of them" } else { "" }
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"
# comment
[[scenario]]
name = "clean"
count = 2000
pps = 20000
max-loss = "0.5%"
repeat = 3

[[scenario]]
name = "lossy"
impair = "loss=1%,seed=7"
max_loss = "2%"
echo = true
gro = false
label = ["kind=lossy", "x=1"]

[[scenario]]
name = "remote"
target = "192.0.2.7:5210"
rate = "10M"
"#;

    fn error(text: &str) -> String {
        parse(text).expect_err("must be refused").0
    }

    #[test]
    fn scenarios_become_cli_argument_vectors_in_file_order() {
        let s = parse(VALID).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].name, "clean");
        assert_eq!(s[0].line, 3);
        assert_eq!(s[0].repeat, 3);
        assert_eq!(s[0].target, None);
        assert_eq!(
            s[0].argv,
            [
                "udplab",
                "loopback",
                "--count=2000",
                "--max-loss=0.5%",
                "--pps=20000"
            ]
        );
        assert_eq!(
            s[1].argv,
            [
                "udplab",
                "loopback",
                "--echo",
                "--impair=loss=1%,seed=7",
                "--label=kind=lossy",
                "--label=x=1",
                "--max-loss=2%"
            ]
        );
        assert_eq!(s[1].repeat, 1);
        assert_eq!(s[2].target.as_deref(), Some("192.0.2.7:5210"));
        assert_eq!(
            s[2].argv,
            ["udplab", "send", "192.0.2.7:5210", "--rate=10M"]
        );
        for scenario in &s {
            scenario.parse_command().expect("clap accepts");
        }
        assert_eq!(s[1].line_of("impair"), 12);
    }

    #[test]
    fn every_error_names_the_key_and_its_line() {
        let cases: [(&str, &str); 12] = [
            (
                "[[scenario]]\nname = \"a\"\nrat = 5\n",
                "line 3: unknown key `rat`",
            ),
            (
                "[[scenario]]\nname = \"a\"\n\n[other]\n",
                "line 4: unknown key `other`",
            ),
            (
                "[[scenario]]\ncount = 5\n",
                "line 1: scenario without a `name`",
            ),
            (
                "[[scenario]]\nname = 5\n",
                "line 2: `name` must be a string",
            ),
            (
                "[[scenario]]\nname = \"\"\n",
                "line 2: `name` must not be empty",
            ),
            (
                "[[scenario]]\nname = \"a\"\n[[scenario]]\nname = \"a\"\n",
                "line 3: scenario name \"a\" is already used on line 1",
            ),
            (
                "[[scenario]]\nname = \"a\"\nrepeat = 0\n",
                "line 3: `repeat` must be",
            ),
            (
                "[[scenario]]\nname = \"a\"\necho = \"yes\"\n",
                "line 3: `echo` is a switch",
            ),
            (
                "[[scenario]]\nname = \"a\"\njson = \"x.json\"\n",
                "line 3: `json`: the suite",
            ),
            (
                "[[scenario]]\nname = \"a\"\ncount = [1, 2]\n",
                "line 3: `count` takes one value",
            ),
            ("[[scenario]]\nname = \"a\"\ncount = \n", "line 3: "),
            ("", "no scenario"),
        ];
        for (text, needle) in cases {
            let e = error(text);
            assert!(e.contains(needle), "{text:?}: {e}");
        }
        // A key that is an option of send but not of loopback.
        let e = error("[[scenario]]\nname = \"a\"\nipv6 = true\ntarget = \"h:1\"\n");
        assert!(
            e.contains("line 3: unknown key `ipv6`") && e.contains("udplab send"),
            "{e}"
        );
    }

    #[test]
    fn a_bad_value_is_the_cli_error_at_the_line_of_its_key() {
        let s = parse("[[scenario]]\nname = \"a\"\ncount = 10\nrate = \"fast\"\n").unwrap();
        let e = s[0].parse_command().unwrap_err().0;
        assert!(e.starts_with("line 4: scenario \"a\": "), "{e}");
        assert!(e.contains("--rate"), "{e}");
        let s = parse("[[scenario]]\nname = \"b\"\nmax-loss = \"0.5\"\n").unwrap();
        let e = s[0].parse_command().unwrap_err().0;
        assert!(
            e.starts_with("line 3: ") && e.contains("percent sign"),
            "{e}"
        );
    }
}
