//! Entry point of the `udplab` binary: parse, resolve, run, map the outcome to an exit code.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use udplab::cli::{Cli, Command};
use udplab::config::{self, DEFAULT_PORT, JsonOut, Outputs, RecvConfig, SendConfig};
use udplab::error::{EXIT_USAGE, Outcome, UsageError};
use udplab::net;
use udplab::run::{self, Stop, judge, print_stderr, write_outputs};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let stop = Stop::new();
    if let Err(e) = run::install_signal_handlers(&stop) {
        run::warn(&format!("no signal handling: {e}"));
    }
    let result = dispatch(cli.command, &stop);
    // Every output file that failed, one line each; the others were written regardless.
    let failed_outputs = run::take_output_failures();
    for f in &failed_outputs {
        print_stderr(&format!("udplab: error: {f}"));
    }
    match result {
        Ok(outcome) => {
            if let Outcome::ThresholdFailed(lines) | Outcome::Incomplete(lines) = &outcome {
                for line in lines {
                    print_stderr(&format!("udplab: {line}"));
                }
            }
            if failed_outputs.is_empty() {
                outcome.exit_code()
            } else {
                ExitCode::from(EXIT_USAGE)
            }
        }
        Err(e) => {
            // One line, no backtrace: the cause chain joined.
            let msg = e
                .chain()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(": ");
            print_stderr(&format!("udplab: error: {msg}"));
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn dispatch(command: Command, stop: &Stop) -> anyhow::Result<Outcome> {
    match command {
        Command::Recv(args) => {
            let bind = net::resolve(&args.bind, DEFAULT_PORT)?;
            let cfg = RecvConfig::from_args(bind, &args)?;
            let checked = run::check_outputs(&cfg.outputs, &[])?;
            let result = serve(cfg, stop);
            checked.remove_unwritten();
            result
        }
        Command::Send(cmd) => {
            let addr = net::resolve(&cmd.target, DEFAULT_PORT)?;
            config::check_destination(&cmd.target, addr)?;
            let mut cfg =
                SendConfig::from_args(&cmd.target, addr, &cmd.opts, Duration::from_secs(10))?;
            if let Some(bind) = &cmd.bind {
                cfg.set_bind(bind)?;
            }
            if cfg.hdr_log.is_some() && !cfg.echo {
                return Err(UsageError(
                    "send --hdr-log logs the RTT histograms, which need --echo (one-way latency \
                     is the receiver's; `loopback --hdr-log` logs both)"
                        .into(),
                )
                .into());
            }
            let checked = run::check_outputs(&cfg.outputs, &logs(&cfg))?;
            let result = if cfg.flows > 1 {
                run::flows::run(&cfg, stop)
                    .and_then(|r| run::flows::write_outputs(r, &cfg.outputs, &cfg.thresholds))
            } else {
                run::send::run(&cfg, stop).map(|r| finish_send(r, &cfg))
            };
            checked.remove_unwritten();
            result
        }
        Command::Loopback(cmd) => {
            let placeholder = if cmd.ipv6 { "[::1]:0" } else { "127.0.0.1:0" };
            let addr = placeholder
                .parse()
                .map_err(|_| UsageError("loopback address".into()))?;
            let cfg = SendConfig::from_args(placeholder, addr, &cmd.opts, Duration::from_secs(5))?;
            let checked = run::check_outputs(&cfg.outputs, &logs(&cfg))?;
            let rx = run::loopback::LoopbackReceiver {
                ipv6: cmd.ipv6,
                kernel_timestamps: !cmd.no_kernel_timestamps,
                gro: cmd.gro,
            };
            let result = if cfg.flows > 1 {
                run::loopback::with_receiver(cfg.clone(), rx, stop, run::flows::run)
                    .and_then(|r| run::flows::write_outputs(r, &cfg.outputs, &cfg.thresholds))
            } else {
                run::loopback::run(cfg.clone(), rx, stop).map(|r| finish_send(r, &cfg))
            };
            checked.remove_unwritten();
            result
        }
        Command::Proxy(args) => {
            let listen = net::resolve(&args.listen, DEFAULT_PORT)?;
            let target = net::resolve(&args.to, DEFAULT_PORT)?;
            let json = args.json.as_ref().map(|p| {
                if p.as_os_str() == "-" {
                    JsonOut::Stdout
                } else {
                    JsonOut::File(p.clone())
                }
            });
            let outputs = Outputs {
                json,
                ..Outputs::default()
            };
            let checked = run::check_outputs(&outputs, &[])?;
            let cfg = run::proxy::ProxyConfig {
                listen,
                target,
                forward: args.impair.filter(|s| !s.is_noop()),
                reverse: args.reverse_impair.filter(|s| !s.is_noop()),
                interval: args.interval,
                duration: args.duration,
                buffers: args.buffers,
                max_clients: args.max_clients,
                client_idle: args.client_idle,
                key: udplab::auth::Key::resolve(args.key.as_deref())
                    .map_err(|e| UsageError(e.to_string()))?,
            };
            let result = run::proxy::run(&cfg, stop);
            checked.remove_unwritten();
            let report = result?;
            let mut text = run::text_writer(&outputs);
            run::proxy::write_summary(&mut text, &report)?;
            match &outputs.json {
                Some(JsonOut::Stdout) => {
                    let _ = run::proxy::write_json(run::Stdout, &report);
                }
                Some(JsonOut::File(path)) => {
                    let mut bytes = Vec::new();
                    match run::proxy::write_json(&mut bytes, &report) {
                        Ok(()) => run::write_file(path, &bytes, false),
                        Err(e) => run::record_output_failure(&path.display().to_string(), e),
                    }
                }
                None => {}
            }
            Ok(if stop.requested() {
                Outcome::Interrupted
            } else {
                Outcome::Passed
            })
        }
        Command::Plot(args) => {
            run::plot::run(&args)?;
            Ok(Outcome::Passed)
        }
        Command::Completions(args) => {
            let mut out = run::Stdout;
            udplab::cli::write_completions(args.shell, &mut out);
            out.flush()?;
            Ok(Outcome::Passed)
        }
        Command::Man => {
            let mut out = run::Stdout;
            udplab::cli::write_man(&mut out)?;
            out.flush()?;
            Ok(Outcome::Passed)
        }
        Command::Suite(args) => udplab::suite::run_suite(&args, stop),
        Command::Compare(args) => udplab::suite::compare_files(&args),
    }
}

/// Serves tests until stopped (or after one with `--once`).
fn serve(cfg: RecvConfig, stop: &Stop) -> anyhow::Result<Outcome> {
    let receiver = run::recv::Receiver::bind(cfg)?;
    // Scripts and tests read this first line to learn the port.
    let mut out = run::Stdout;
    writeln!(out, "listening on {}", receiver.local_addr())?;
    out.flush()?;
    let outcome = receiver.run(stop)?;
    Ok(if outcome.interrupted {
        Outcome::Interrupted
    } else {
        Outcome::Passed
    })
}

/// The log files a sender writes besides the report outputs.
fn logs(cfg: &SendConfig) -> Vec<&Path> {
    let hdr_log = cfg.hdr_log.as_ref().map(|(path, _)| path.as_path());
    cfg.impair_log
        .as_deref()
        .into_iter()
        .chain(hdr_log)
        .collect()
}

/// Judges the thresholds (so the files carry the verdict), then writes the report.
fn finish_send(mut report: udplab::summary::RunReport, cfg: &SendConfig) -> Outcome {
    if let Some(mut reverse) = report.bidir_reverse.take() {
        // `--bidir`: each direction judged on its own; the worse outcome decides.
        let forward_outcome = judge(&mut report, &cfg.thresholds).labelled("forward: ");
        let reverse_outcome = judge(&mut reverse, &cfg.thresholds).labelled("reverse: ");
        run::write_bidir_outputs(&report, &reverse, &cfg.outputs);
        return forward_outcome.worse(reverse_outcome);
    }
    let outcome = judge(&mut report, &cfg.thresholds);
    write_outputs(&report, &cfg.outputs, false);
    run::send::write_hdr_log(cfg);
    outcome
}
