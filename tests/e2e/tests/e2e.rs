//! Runs the end-to-end suite against the test host, and against a real `spin up` when a
//! `spin` binary is available (`SPIN_BIN` or `PATH`). Without Spin, the real-Spin tests
//! are reported as ignored — never as passed — except under CI (`CI=true`), where they
//! fail. Every `spin up` the suite started is stopped before the process exits, whatever
//! the outcome.

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    use std::sync::{Arc, OnceLock};

    use libtest_mimic::{Arguments, Failed, Trial};
    use stock_e2e::client::Client;
    use stock_e2e::{suite, targets};
    use stock_test_host::spin;

    let args = Arguments::from_args();
    let host: Arc<OnceLock<Result<stock_test_host::RunningHost, String>>> = Arc::default();
    let spin_bin = spin::binary();
    let spin: Arc<OnceLock<Result<spin::SpinUp, String>>> = Arc::default();
    let skip_spin = spin_bin.is_none() && !spin::required();
    if skip_spin {
        eprintln!("note: no `spin` binary (SPIN_BIN or PATH): the spin:: tests are NOT RUN");
    }

    let mut trials = Vec::new();
    for (name, test) in suite::all() {
        let host = Arc::clone(&host);
        trials.push(Trial::test(format!("host::{name}"), move || {
            let running = host
                .get_or_init(|| targets::start_test_host().map_err(|e| format!("{e:#}")))
                .as_ref()
                .map_err(|e| Failed::from(format!("test host did not start: {e}")))?;
            test(&Client::new(running.base_url())).map_err(|e| Failed::from(format!("{e:#}")))
        }));
        let spin = Arc::clone(&spin);
        let bin = spin_bin.clone();
        trials.push(
            Trial::test(format!("spin::{name}"), move || {
                let bin = bin
                    .as_ref()
                    .ok_or("no spin binary (set SPIN_BIN): required under CI")?;
                let running = spin
                    .get_or_init(|| targets::start_spin(bin).map_err(|e| format!("{e:#}")))
                    .as_ref()
                    .map_err(|e| Failed::from(format!("spin up did not start: {e}")))?;
                test(&Client::new(running.base_url().to_owned()))
                    .map_err(|e| Failed::from(format!("{e:#}")))
            })
            .with_ignored_flag(skip_spin),
        );
    }
    let conclusion = libtest_mimic::run(&args, trials);
    // `exit` skips destructors: stop `spin up` (and its trigger processes) first. The
    // trials, and with them every other handle on it, are gone by now.
    drop(Arc::into_inner(spin).and_then(OnceLock::into_inner));
    conclusion.exit();
}

#[cfg(target_arch = "wasm32")]
fn main() {}
