//! `stock-test-host --manifest PATH [--listen ADDR] [--variable NAME=VALUE]...
//! [--max-body-bytes N]`: serves a Spin application until killed (for the load
//! tool and manual runs). Application variables also come from
//! `SPIN_VARIABLE_<NAME>` environment variables, as with `spin up`; a
//! `--variable` wins over the environment. It does not build anything: build
//! the components first (`cargo build --target wasm32-wasip2 --release …`).

#[cfg(not(target_arch = "wasm32"))]
fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("stock-test-host: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
const USAGE: &str = "usage: stock-test-host --manifest PATH [--listen 127.0.0.1:PORT] \
                     [--variable NAME=VALUE]... [--max-body-bytes N]";

#[cfg(not(target_arch = "wasm32"))]
fn run() -> anyhow::Result<()> {
    use anyhow::{Context, bail};
    use std::io::Write;

    let mut manifest = None;
    let mut listen = None;
    let mut max_body_bytes = None;
    // Environment first, so that `--variable` (pushed later) wins.
    let mut variables: Vec<(String, String)> = std::env::vars()
        .filter_map(|(key, value)| {
            let name = key.strip_prefix("SPIN_VARIABLE_")?;
            Some((name.to_ascii_lowercase(), value))
        })
        .collect();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .with_context(|| format!("{name} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--manifest" | "-f" => manifest = Some(value("--manifest")?),
            "--listen" => listen = Some(value("--listen")?.parse().context("--listen")?),
            "--variable" => {
                let pair = value("--variable")?;
                let (name, value) = pair
                    .split_once('=')
                    .with_context(|| format!("--variable {pair:?}: expected NAME=VALUE"))?;
                variables.push((name.to_owned(), value.to_owned()));
            }
            "--max-body-bytes" => {
                max_body_bytes = Some(
                    value("--max-body-bytes")?
                        .parse()
                        .context("--max-body-bytes")?,
                );
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unexpected argument {other:?}\n{USAGE}"),
        }
    }
    let Some(manifest) = manifest else {
        bail!("--manifest is required\n{USAGE}");
    };
    let mut config = stock_test_host::HostConfig::new(manifest);
    config.variables = variables;
    config.max_body_bytes = max_body_bytes;
    if let Some(listen) = listen {
        config.listen = listen;
    }
    let host = stock_test_host::start(config)?;
    println!("listening on {}", host.base_url());
    std::io::stdout().flush()?;
    host.wait();
    Ok(())
}
