//! `stock-load`: the command line of the load tool.
//!
//! ```text
//! stock-load --base-url URL --admin-token T --service-token T [--cas-url URL]
//!            <flash-sale|spread> [--units N] [--concurrency C] [--products M]
//!            [--duration-secs S] [--requests R] [--release-ratio F]
//!            [--quantity Q] [--json PATH]
//! stock-load scale [--products N,N,…] [--history H] [--reservations P]
//!            [--min-keys K] [--samples S] [--events-samples S] [--expire-samples S]
//!            [--spin PATH] [--manifest PATH] [--work-dir DIR] [--keep] [--json PATH]
//! ```
//!
//! Tokens default to `STOCK_ADMIN_TOKEN` / `STOCK_SERVICE_TOKEN`. Prints a
//! table on stdout, writes the JSON report to `--json`, and exits 0 when the
//! invariants hold (for `scale`: every answer was right), 1 when they do not,
//! 2 on a usage or set-up error.

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
    use stock_load::scale::{self, Samples, ScaleConfig, SpinOptions};
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
Exit status: 0 invariants hold, 1 invariants fail, 2 usage or set-up error.

usage: stock-load scale [--products N,N,…] [--history H] [--reservations P]
                        [--min-keys K] [--samples S] [--events-samples S]
                        [--expire-samples S] [--spin PATH] [--manifest PATH]
                        [--work-dir DIR] [--keep] [--json PATH]

  scale           for each catalogue size N (default 1000,10000,100000): fills a
                  Spin SQLite key-value file natively through the domain crate
                  with N products of --history H entries (default 20) and
                  --reservations P settled reservations (default N), serves it
                  with a real `spin up` (--spin, default `spin` on PATH;
                  --manifest, default spin.toml, components already built), and
                  measures p50/p99 of every endpoint: --samples (default 200)
                  sequential requests each, --events-samples for the event feed
                  (default: --samples), --expire-samples for the expiry sweep
                  (default 20). Prints the table and each row's growth from the
                  smallest to the largest N. Exits 1 if any answer is wrong.
  --min-keys      go on adding settled reservations until the file holds K keys
  --work-dir      where the store files and Spin logs go (default
                  target/stock-load-scale); --keep keeps the store files
  Tokens: $STOCK_ADMIN_TOKEN / $STOCK_SERVICE_TOKEN or --admin-token /
  --service-token, else fixed ones: this `spin up` is the tool's own.";

    /// A parsed command line.
    #[derive(Debug)]
    enum Command {
        Load(Args),
        Scale(ScaleArgs),
    }

    /// A parsed `scale` command line.
    #[derive(Debug)]
    struct ScaleArgs {
        config: ScaleConfig,
        json: Option<PathBuf>,
    }

    /// A parsed load-scenario command line.
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
        let outcome = match &args {
            Command::Load(args) => execute(args),
            Command::Scale(args) => execute_scale(args),
        };
        match outcome {
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

    /// Runs the scale scenario, prints and saves the report; true if every answer was right.
    fn execute_scale(args: &ScaleArgs) -> anyhow::Result<bool> {
        let report = scale::run(&args.config, |line| eprintln!("stock-load scale: {line}"))?;
        print!("{}", report.render());
        println!("\n{}", report.markdown());
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
    ) -> anyhow::Result<Option<Command>> {
        let args: Vec<String> = args.into_iter().collect();
        if args.iter().any(|a| a == "--help" || a == "-h") {
            return Ok(None);
        }
        if subcommand(&args) == Some("scale") {
            return parse_scale(args, env).map(|a| Some(Command::Scale(a)));
        }
        parse_load(args, env).map(|a| a.map(Command::Load))
    }

    /// The first argument that is neither an option nor an option's value.
    fn subcommand(args: &[String]) -> Option<&str> {
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--keep" => {}
                option if option.starts_with("--") => {
                    args.next();
                }
                positional => return Some(positional),
            }
        }
        None
    }

    /// Parses `scale`'s arguments.
    fn parse_scale(
        args: Vec<String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<ScaleArgs> {
        let mut config = ScaleConfig {
            products: vec![1_000, 10_000, 100_000],
            history: 20,
            reservations: None,
            min_keys: None,
            samples: Samples {
                each: 200,
                events: 200,
                expire: 20,
            },
            spin: SpinOptions {
                bin: PathBuf::from("spin"),
                manifest: PathBuf::from("spin.toml"),
                admin_token: env("STOCK_ADMIN_TOKEN").unwrap_or_else(|| "scale-admin".into()),
                service_token: env("STOCK_SERVICE_TOKEN").unwrap_or_else(|| "scale-service".into()),
            },
            store: "default".into(),
            work_dir: PathBuf::from("target/stock-load-scale"),
            keep: false,
        };
        let mut json = None;
        let mut events_samples = None;
        let mut args = args.into_iter();
        while let Some(option) = args.next() {
            match option.as_str() {
                "scale" => continue,
                "--keep" => {
                    config.keep = true;
                    continue;
                }
                option if option.starts_with("--") => {}
                other => bail!("unexpected argument {other:?}"),
            }
            let value = args
                .next()
                .with_context(|| format!("{option} needs a value"))?;
            let context = || format!("{option} {value:?}");
            match option.as_str() {
                "--products" => {
                    config.products = value
                        .split(',')
                        .map(|n| n.trim().replace('_', "").parse())
                        .collect::<Result<_, _>>()
                        .with_context(context)?;
                }
                "--history" => config.history = value.parse().with_context(context)?,
                "--reservations" => {
                    config.reservations = Some(value.parse().with_context(context)?);
                }
                "--min-keys" => config.min_keys = Some(value.parse().with_context(context)?),
                "--samples" => config.samples.each = value.parse().with_context(context)?,
                "--events-samples" => events_samples = Some(value.parse().with_context(context)?),
                "--expire-samples" => {
                    config.samples.expire = value.parse().with_context(context)?
                }
                "--spin" => config.spin.bin = PathBuf::from(value),
                "--manifest" => config.spin.manifest = PathBuf::from(value),
                "--work-dir" => config.work_dir = PathBuf::from(value),
                "--admin-token" => config.spin.admin_token = value,
                "--service-token" => config.spin.service_token = value,
                "--json" => json = Some(PathBuf::from(value)),
                other => bail!("unknown option {other} for scale"),
            }
        }
        config.samples.events = events_samples.unwrap_or(config.samples.each);
        Ok(ScaleArgs { config, json })
    }

    /// Parses a load scenario's arguments; `Ok(None)` for `--help`.
    fn parse_load(
        args: Vec<String>,
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

        fn load(line: &str, env: impl Fn(&str) -> Option<String>) -> Args {
            match parse(args(line), env).unwrap().unwrap() {
                Command::Load(args) => args,
                Command::Scale(scale) => panic!("not a load scenario: {scale:?}"),
            }
        }

        fn scale(line: &str, env: impl Fn(&str) -> Option<String>) -> ScaleArgs {
            match parse(args(line), env).unwrap().unwrap() {
                Command::Scale(args) => args,
                Command::Load(load) => panic!("not scale: {load:?}"),
            }
        }

        #[test]
        fn a_full_command_line_parses() {
            let parsed = load(
                "--base-url http://127.0.0.1:9003 --admin-token a --service-token s \
                 --cas-url http://127.0.0.1:9004/bench/cas flash-sale --units 2000 \
                 --concurrency 32 --duration-secs 2.5 --requests 900 \
                 --release-ratio 0.25 --quantity 2 --json out.json",
                no_env,
            );
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
            let parsed = load("spread --base-url http://h:1 --products 200", env);
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
            assert!(parse(args("scale --help"), no_env).unwrap().is_none());
        }

        #[test]
        fn scale_has_defaults_for_everything() {
            let parsed = scale("scale", no_env);
            let config = &parsed.config;
            assert_eq!(config.products, [1_000, 10_000, 100_000]);
            assert_eq!(
                (config.history, config.reservations, config.min_keys),
                (20, None, None)
            );
            assert_eq!(
                (
                    config.samples.each,
                    config.samples.events,
                    config.samples.expire
                ),
                (200, 200, 20)
            );
            assert_eq!(config.spin.bin, PathBuf::from("spin"));
            assert_eq!(config.spin.manifest, PathBuf::from("spin.toml"));
            assert_eq!(config.store, "default");
            assert!(!config.keep && parsed.json.is_none());
            assert_eq!(config.spin.admin_token, "scale-admin");
            let from_env = scale("scale", |name: &str| Some(format!("env-{name}")));
            assert_eq!(
                from_env.config.spin.service_token,
                "env-STOCK_SERVICE_TOKEN"
            );
        }

        #[test]
        fn a_full_scale_command_line_parses() {
            let parsed = scale(
                "--spin /opt/spin scale --products 1_000,10000 --history 5 --reservations 7 \
                 --min-keys 2500000 --samples 50 --events-samples 9 --expire-samples 3 \
                 --manifest app/spin.toml --work-dir /tmp/w --keep --admin-token a \
                 --service-token s --json scale.json",
                no_env,
            );
            let config = &parsed.config;
            assert_eq!(config.products, [1_000, 10_000]);
            assert_eq!((config.history, config.reservations), (5, Some(7)));
            assert_eq!(config.min_keys, Some(2_500_000));
            assert_eq!(
                (
                    config.samples.each,
                    config.samples.events,
                    config.samples.expire
                ),
                (50, 9, 3)
            );
            assert_eq!(config.spin.bin, PathBuf::from("/opt/spin"));
            assert_eq!(config.spin.manifest, PathBuf::from("app/spin.toml"));
            assert_eq!(config.work_dir, PathBuf::from("/tmp/w"));
            assert!(config.keep);
            assert_eq!(
                (
                    config.spin.admin_token.as_str(),
                    config.spin.service_token.as_str()
                ),
                ("a", "s")
            );
            assert_eq!(parsed.json, Some(PathBuf::from("scale.json")));
        }

        #[test]
        fn bad_scale_command_lines_are_refused() {
            for line in [
                "scale --products 1000,x",
                "scale --products",
                "scale --history -1",
                "scale --units 5",
                "scale extra",
                "scale --min-keys many",
            ] {
                assert!(parse(args(line), no_env).is_err(), "{line}");
            }
            // A value that reads like the subcommand is still a value.
            let parsed = load(
                "flash-sale --base-url http://h:1 --admin-token scale --service-token s",
                no_env,
            );
            assert_eq!(parsed.config.admin_token, "scale");
        }
    }
}
