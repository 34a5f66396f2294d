//! Entry point of the `udplab` binary: parse, resolve, run, map the outcome to an exit code.

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use udplab::cli::{Cli, Command};
use udplab::config::{DEFAULT_PORT, RecvConfig, SendConfig};
use udplab::error::{Outcome, UsageError};
use udplab::net;
use udplab::run::{self, Stop, check_thresholds, write_outputs};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let stop = Stop::new();
    if let Err(e) = run::install_signal_handlers(&stop) {
        eprintln!("udplab: warning: no signal handling: {e}");
    }
    match dispatch(cli.command, &stop) {
        Ok(outcome) => {
            if let Outcome::ThresholdFailed(why) = &outcome {
                for w in why {
                    eprintln!("udplab: threshold failed: {w}");
                }
            }
            outcome.exit_code()
        }
        Err(e) => {
            // One line, no backtrace: the cause chain joined.
            let msg = e
                .chain()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(": ");
            eprintln!("udplab: error: {msg}");
            ExitCode::from(2)
        }
    }
}

fn dispatch(command: Command, stop: &Stop) -> anyhow::Result<Outcome> {
    match command {
        Command::Recv(args) => {
            let bind = net::resolve(&args.bind, DEFAULT_PORT)?;
            let cfg = RecvConfig::from_args(bind, &args)?;
            let receiver = run::recv::Receiver::bind(cfg)?;
            {
                // Scripts and tests read this first line to learn the port.
                let mut out = io::stdout().lock();
                writeln!(out, "listening on {}", receiver.local_addr())?;
                out.flush()?;
            }
            let outcome = receiver.run(stop)?;
            Ok(if outcome.interrupted {
                Outcome::Interrupted
            } else {
                Outcome::Passed
            })
        }
        Command::Send(cmd) => {
            let addr = net::resolve(&cmd.target, DEFAULT_PORT)?;
            let cfg = SendConfig::from_args(&cmd.target, addr, &cmd.opts, Duration::from_secs(10))?;
            if cfg.flows > 1 {
                let report = run::flows::run(&cfg, stop)?;
                return run::flows::write_outputs(&report, &cfg.outputs, &cfg.thresholds);
            }
            let report = run::send::run(&cfg, stop)?;
            finish_send(&report, &cfg)
        }
        Command::Loopback(cmd) => {
            let placeholder = if cmd.ipv6 { "[::1]:0" } else { "127.0.0.1:0" };
            let addr = placeholder
                .parse()
                .map_err(|_| UsageError("loopback address".into()))?;
            let cfg = SendConfig::from_args(placeholder, addr, &cmd.opts, Duration::from_secs(5))?;
            let rx = run::loopback::LoopbackReceiver {
                ipv6: cmd.ipv6,
                kernel_timestamps: !cmd.no_kernel_timestamps,
                gro: cmd.gro,
            };
            if cfg.flows > 1 {
                let report = run::loopback::with_receiver(cfg.clone(), rx, stop, run::flows::run)?;
                return run::flows::write_outputs(&report, &cfg.outputs, &cfg.thresholds);
            }
            let report = run::loopback::run(cfg.clone(), rx, stop)?;
            finish_send(&report, &cfg)
        }
        Command::Proxy(args) => {
            let listen = net::resolve(&args.listen, DEFAULT_PORT)?;
            let target = net::resolve(&args.to, DEFAULT_PORT)?;
            let cfg = run::proxy::ProxyConfig {
                listen,
                target,
                forward: args.impair.filter(|s| !s.is_noop()),
                reverse: args.reverse_impair.filter(|s| !s.is_noop()),
                interval: args.interval,
                duration: args.duration,
                buffers: args.buffers,
            };
            let report = run::proxy::run(&cfg, stop)?;
            let to_stdout = args.json.as_ref().is_some_and(|p| p.as_os_str() == "-");
            let mut text: Box<dyn Write> = if to_stdout {
                Box::new(io::stderr())
            } else {
                Box::new(io::stdout())
            };
            run::proxy::write_summary(&mut text, &report)?;
            if let Some(path) = &args.json {
                if to_stdout {
                    run::proxy::write_json(io::stdout().lock(), &report)?;
                } else {
                    run::proxy::write_json(std::fs::File::create(path)?, &report)?;
                }
            }
            Ok(if stop.requested() {
                Outcome::Interrupted
            } else {
                Outcome::Passed
            })
        }
    }
}

fn finish_send(report: &udplab::summary::RunReport, cfg: &SendConfig) -> anyhow::Result<Outcome> {
    write_outputs(report, &cfg.outputs, false)?;
    let outcome = check_thresholds(report, &cfg.thresholds);
    Ok(match outcome {
        Outcome::Passed if report.interrupted => Outcome::Interrupted,
        other => other,
    })
}
