//! `stock-load`: the command line of the load tool.
//!
//! ```text
//! stock-load --base-url URL --admin-token T --service-token T [--cas-url URL]
//!            <flash-sale|spread> [--units N] [--concurrency C] [--products M]
//!            [--duration-secs S] [--requests R] [--release-ratio F]
//!            [--quantity Q] [--json PATH]
//! ```
//!
//! Tokens default to `STOCK_ADMIN_TOKEN` / `STOCK_SERVICE_TOKEN`. Prints a
//! table on stdout, writes the JSON report to `--json`, and exits 0 when the
//! invariants hold, 1 when they do not, 2 on a usage or set-up error.

#[cfg(not(target_arch = "wasm32"))]
fn main() -> std::process::ExitCode {
    cli::main()
}

#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
mod cli {
    use std::path::PathBuf;
    use std::process::ExitCode;
    use std::time::Duration;

    use anyhow::{Context, bail};
    use stock_load::{Config, Scenario};

    const USAGE: &str = "\
usage: stock-load --base-url URL --admin-token T --service-token T [--cas-url URL]
                  <flash-sale|spread> [--units N] [--concurrency C] [--products M]
                  [--duration-secs S] [--requests R] [--release-ratio F]
                  [--quantity Q] [--json PATH]

  flash-sale      one product with --units units (default 1000); clients reserve
                  then commit, --release-ratio of them (default 0.1) release
                  instead, until sold out; --duration-secs bounds it (default 300)
  spread          --products products (default 100) of --units units (default
                  10000); a uniform mix of stock reads, availability checks,
                  reserves, commits and releases for --duration-secs (default 10)
  --cas-url       the bare-CAS reference (e.g. http://127.0.0.1:9004/bench/cas),
                  driven afterwards with the same concurrency for as long
  --concurrency   simulated clients, one connection each (default 16)
  --requests      bound on requests (default: 50 per unit + 10000 for a flash
                  sale, 10 million for a spread)
  --quantity      units per reservation (default 1)
  --json          also write the report as JSON to this file
Tokens default to $STOCK_ADMIN_TOKEN and $STOCK_SERVICE_TOKEN.
Exit status: 0 invariants hold, 1 invariants fail, 2 usage or set-up error.";

    /// A parsed command line.
    #[derive(Debug)]
    struct Args {
        scenario: Scenario,
        config: Config,
        cas_url: Option<String>,
        json: Option<PathBuf>,
    }

    pub fn main() -> ExitCode {
        let args = match parse(std::env::args().skip(1), |name| std::env::var(name).ok()) {
            Ok(Some(args)) => args,
            Ok(None) => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            Err(error) => {
                eprintln!("stock-load: {error:#}\n\n{USAGE}");
                return ExitCode::from(2);
            }
        };
        match execute(&args) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(error) => {
                eprintln!("stock-load: {error:#}");
                ExitCode::from(2)
            }
        }
    }

    /// Runs the scenario, prints and saves the report; true if the invariants hold.
    fn execute(args: &Args) -> anyhow::Result<bool> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let report = runtime.block_on(stock_load::run(
            args.scenario,
            &args.config,
            args.cas_url.as_deref(),
        ))?;
        print!("{}", report.render());
        if let Some(path) = &args.json {
            let json = serde_json::to_string_pretty(&report)?;
            std::fs::write(path, json + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
            println!("JSON report: {}", path.display());
        }
        Ok(report.passed())
    }

    /// Parses the arguments; `Ok(None)` for `--help`.
    fn parse(
        args: impl IntoIterator<Item = String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Option<Args>> {
        let mut scenario = None;
        let mut options: Vec<(String, String)> = Vec::new();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--help" | "-h" => return Ok(None),
                "flash-sale" => scenario = Some(Scenario::FlashSale),
                "spread" => scenario = Some(Scenario::Spread),
                option if option.starts_with("--") => {
                    let value = args
                        .next()
                        .with_context(|| format!("{option} needs a value"))?;
                    options.push((option.to_owned(), value));
                }
                other => bail!("unexpected argument {other:?}"),
            }
        }
        let scenario = scenario.context("no scenario: flash-sale or spread")?;
        let mut base_url = None;
        let mut admin_token = env("STOCK_ADMIN_TOKEN");
        let mut service_token = env("STOCK_SERVICE_TOKEN");
        let mut cas_url = None;
        let mut json = None;
        let mut config = Config::new(scenario, "", "", "");
        for (option, value) in options {
            let context = || format!("{option} {value:?}");
            match option.as_str() {
                "--base-url" => base_url = Some(value),
                "--admin-token" => admin_token = Some(value),
                "--service-token" => service_token = Some(value),
                "--cas-url" => cas_url = Some(value),
                "--json" => json = Some(PathBuf::from(value)),
                "--units" => config.units = value.parse().with_context(context)?,
                "--quantity" => config.quantity = value.parse().with_context(context)?,
                "--concurrency" => config.concurrency = value.parse().with_context(context)?,
                "--products" => config.products = value.parse().with_context(context)?,
                "--requests" => config.max_requests = Some(value.parse().with_context(context)?),
                "--release-ratio" => config.release_ratio = value.parse().with_context(context)?,
                "--duration-secs" => {
                    let secs: f64 = value.parse().with_context(context)?;
                    config.duration = Duration::try_from_secs_f64(secs).with_context(context)?;
                }
                other => bail!("unknown option {other}"),
            }
        }
        config.base_url = base_url.context("--base-url is required")?;
        config.admin_token =
            admin_token.context("--admin-token or $STOCK_ADMIN_TOKEN is required")?;
        config.service_token =
            service_token.context("--service-token or $STOCK_SERVICE_TOKEN is required")?;
        Ok(Some(Args {
            scenario,
            config,
            cas_url,
            json,
        }))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn args(line: &str) -> Vec<String> {
            line.split_whitespace().map(str::to_owned).collect()
        }

        fn no_env(_: &str) -> Option<String> {
            None
        }

        #[test]
        fn a_full_command_line_parses() {
            let parsed = parse(
                args(
                    "--base-url http://127.0.0.1:9003 --admin-token a --service-token s \
                     --cas-url http://127.0.0.1:9004/bench/cas flash-sale --units 2000 \
                     --concurrency 32 --duration-secs 2.5 --requests 900 \
                     --release-ratio 0.25 --quantity 2 --json out.json",
                ),
                no_env,
            )
            .unwrap()
            .unwrap();
            assert_eq!(parsed.scenario, Scenario::FlashSale);
            let config = &parsed.config;
            assert_eq!(config.base_url, "http://127.0.0.1:9003");
            assert_eq!(
                (config.admin_token.as_str(), config.service_token.as_str()),
                ("a", "s")
            );
            assert_eq!(
                (config.units, config.concurrency, config.quantity),
                (2000, 32, 2)
            );
            assert_eq!(config.duration, Duration::from_millis(2500));
            assert_eq!(config.max_requests, Some(900));
            assert_eq!(config.release_ratio, 0.25);
            assert_eq!(
                parsed.cas_url.as_deref(),
                Some("http://127.0.0.1:9004/bench/cas")
            );
            assert_eq!(parsed.json, Some(PathBuf::from("out.json")));
        }

        #[test]
        fn tokens_come_from_the_environment_and_defaults_per_scenario() {
            let env = |name: &str| Some(format!("env-{name}"));
            let parsed = parse(args("spread --base-url http://h:1 --products 200"), env)
                .unwrap()
                .unwrap();
            assert_eq!(parsed.scenario, Scenario::Spread);
            assert_eq!(parsed.config.admin_token, "env-STOCK_ADMIN_TOKEN");
            assert_eq!(parsed.config.service_token, "env-STOCK_SERVICE_TOKEN");
            assert_eq!(parsed.config.products, 200);
            assert_eq!(parsed.config.units, 10_000);
            assert_eq!(parsed.config.duration, Duration::from_secs(10));
            assert!(parsed.cas_url.is_none() && parsed.json.is_none());
        }

        #[test]
        fn bad_command_lines_are_refused() {
            for line in [
                "--base-url http://h:1 --admin-token a --service-token s",
                "flash-sale --admin-token a --service-token s",
                "flash-sale --base-url http://h:1 --service-token s",
                "flash-sale --base-url http://h:1 --admin-token a --service-token s --units x",
                "flash-sale --base-url http://h:1 --admin-token a --service-token s --bogus 1",
                "flash-sale --base-url http://h:1 --admin-token a --service-token s extra",
                "flash-sale --base-url",
            ] {
                assert!(parse(args(line), no_env).is_err(), "{line}");
            }
            assert!(parse(args("--help"), no_env).unwrap().is_none());
        }
    }
}
