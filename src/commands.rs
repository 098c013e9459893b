//! What each subcommand does, given a loaded configuration.

use tokio_util::sync::CancellationToken;

use crate::cli::{Command, ScopeArgs};
use crate::client::{Client, ClientError};
use crate::config::Config;
use crate::controller::{Controller, Mode, Trigger};
use crate::model::{Force, Scope};
use crate::report::PassReport;
use crate::root::{Kept, WorktreeRoot};
use crate::service::{leader, Service};
use crate::store::Store;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How a command failed: bad usage/configuration (exit 2) or at run time
/// (exit 1).
#[derive(Debug)]
pub enum Error {
    Usage(String),
    Runtime(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Error {
    fn from(e: E) -> Error {
        Error::Runtime(e.into())
    }
}

/// Runs `command`; returns the exit code. `config_file` is the file the
/// configuration was read from, if any: the root must not contain it.
pub async fn dispatch(
    command: Command,
    config: Config,
    config_file: Option<PathBuf>,
) -> Result<u8, Error> {
    let own_files = OwnFiles::of(&config, config_file);
    match command {
        // main.rs execs the agent before any runtime exists.
        Command::Launch { .. } => Err(Error::Usage(
            "launch runs before the runtime starts; it cannot be dispatched".into(),
        )),
        Command::Migrate => migrate(&config).await,
        Command::AcceptRoot => accept_root(config, &own_files).await,
        Command::Archives {
            worktree,
            session,
            json,
        } => archives(&config, crate::archives::Filter { worktree, session }, json).await,
        Command::Restore { what, to, json } => restore(&config, &what, to.as_deref(), json).await,
        Command::Status { url, json } => status(&config, url, json).await,
        Command::Plan { scope, json } => plan(config, &own_files, &scope, json).await,
        Command::Once { scope, force, json } => once(config, &own_files, &scope, force, json).await,
        Command::Run { .. } => run(config, &own_files).await,
    }
}

/// `migrate`.
async fn migrate(config: &Config) -> Result<u8, Error> {
    let store = Store::open_with(&config.database.url, true, (&config.database).into()).await?;
    store.migrate().await?;
    println!("migrations applied to {}", store.url());
    Ok(0)
}

/// `accept-root`: the root as it is now becomes its record.
async fn accept_root(config: Config, own_files: &OwnFiles) -> Result<u8, Error> {
    let (controller, _scan_lock) = start(config, own_files).await?;
    let (before, now) = controller.accept_root().await?;
    match before {
        Some(b) if b == now => println!("the worktree root was recorded as it is already"),
        Some(b) => println!(
            "was: {} on {}{}",
            b.path,
            b.mount,
            if b.held_entries {
                ", holding worktrees"
            } else {
                ", empty"
            }
        ),
        None => println!("was: not recorded"),
    }
    println!(
        "now: {} on {}{}",
        now.path,
        now.mount,
        if now.held_entries {
            ", holding worktrees"
        } else {
            ", empty"
        }
    );
    Ok(0)
}

/// `archives`: what `--force` kept, newest first; reads only.
async fn archives(
    config: &Config,
    filter: crate::archives::Filter,
    json: bool,
) -> Result<u8, Error> {
    let store = Store::open_with(&config.database.url, false, (&config.database).into()).await?;
    let list = crate::archives::list(&store, config, &filter).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        print!("{}", crate::archives::render(&list));
    }
    Ok(0)
}

/// `restore`: an archive back as a new worktree.
async fn restore(
    config: &Config,
    what: &str,
    to: Option<&std::path::Path>,
    json: bool,
) -> Result<u8, Error> {
    let store = Store::open_with(&config.database.url, false, (&config.database).into()).await?;
    let r = crate::archives::restore(&store, config, what, to).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", crate::archives::render_restore(&r));
    }
    Ok(0)
}

/// `status`: what the running controller sees.
async fn status(config: &Config, url: Option<String>, json: bool) -> Result<u8, Error> {
    let url = url.unwrap_or_else(|| Client::base_for(config.http.listen));
    let token = (!config.http.token.is_empty()).then_some(config.http.token.as_str());
    let status = Client::new(&url, token, Duration::from_secs(10))?
        .status()
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        let doc: crate::status::StatusDoc = serde_json::from_value(status)?;
        print!("{}", crate::status::render(&doc));
    }
    Ok(0)
}

/// `plan`: what a pass would do; writes nothing.
async fn plan(
    config: Config,
    own_files: &OwnFiles,
    scope: &ScopeArgs,
    json: bool,
) -> Result<u8, Error> {
    let owner = config.worktrees.owner_uid().map_err(Error::Usage)?;
    let root = WorktreeRoot::open_apart_from(&config.worktrees.root, &own_files.kept(), owner)
        .map_err(|e| Error::Usage(e.to_string()))?;
    // Plan writes nothing, so it neither creates nor migrates the
    // database.
    let store = Store::open_with(&config.database.url, false, (&config.database).into()).await?;
    let controller = Controller::new(config, store, root);
    let report = controller
        .pass(
            scope_of(scope),
            Mode::DryRun,
            Trigger::Command,
            &CancellationToken::new(),
        )
        .await;
    print_report(&report, json)?;
    Ok(report.exit_code())
}

/// `once`: one pass now, beside a running controller only through it.
async fn once(
    config: Config,
    own_files: &OwnFiles,
    scope: &ScopeArgs,
    force: bool,
    json: bool,
) -> Result<u8, Error> {
    let _hangup = ignore_hangup()?;
    let (controller, _scan_lock) = start(config, own_files).await?;
    let cancel = CancellationToken::new();
    let stop = shutdown_on_signal(cancel.clone());
    let scope = scope_of(scope);
    // Never act beside a running controller of the same host: ask
    // it to do the work, or wait for it to let go.
    let lock = match controller
        .store()
        .try_lock_host(&controller.config().host.id)
        .await?
    {
        Some(lock) => Some(lock),
        None => {
            if let Some(code) = nudge_daemon(controller.config(), &scope, force, json).await? {
                stop.abort();
                return Ok(code);
            }
            wait_for_host_lock(&controller, &cancel).await?
        }
    };
    let Some(lock) = lock else {
        return Ok(crate::report::exit::ERROR);
    };
    // Every destructive step confirms it first.
    controller.executor().fence().install(lock);
    let report = controller
        .pass(
            scope,
            Mode::act(Force::from(force)),
            Trigger::Command,
            &cancel,
        )
        .await;
    print_report(&report, json)?;
    say_busy(&report.busy());
    // One-shot: the answer first, then the space, before exiting
    // (what a signal interrupts is left for the next process).
    let swept = controller.executor().reclaimer().sweep(&cancel).await;
    stop.abort();
    for (path, error) in &swept.failed {
        eprintln!(
            "error: trash entry {} cannot be reclaimed: {error}",
            path.display()
        );
    }
    Ok(match (report.exit_code(), swept.failed.is_empty()) {
        (code, true) => code,
        // Busy says more than the reclaimer's error: the forced action
        // itself did not happen.
        (crate::report::exit::BUSY, false) => crate::report::exit::BUSY,
        (_, false) => crate::report::exit::ERROR,
    })
}

/// Tells stderr which forced actions did not happen (exit
/// [`crate::report::exit::BUSY`]): the answer on stdout may be JSON for a
/// program, and the person who ran `once --force` must see it.
fn say_busy(targets: &[String]) {
    for target in targets {
        eprintln!(
            "error: the forced action on {target} did not happen: another run was acting on it \
             throughout (busy); nothing was done to it, run the command again"
        );
    }
}

/// `run`: the daemon: the loop, the HTTP API, notifications, the reclaimer.
async fn run(config: Config, own_files: &OwnFiles) -> Result<u8, Error> {
    let _hangup = ignore_hangup()?;
    let http = &config.http;
    let token = (!http.token.is_empty()).then(|| http.token.clone());
    crate::http::check_listen(http.listen, token.as_deref(), http.allow_insecure_remote)
        .map_err(Error::Usage)?;
    let listener = tokio::net::TcpListener::bind(http.listen)
        .await
        .map_err(|e| {
            Error::Usage(format!(
                "cannot listen on {} (http.listen): {e}",
                http.listen
            ))
        })?;
    let channel = config.database.notify_channel.clone();
    let (controller, _scan_lock) = start(config, own_files).await?;
    let cancel = CancellationToken::new();
    let _stop = shutdown_on_signal(cancel.clone());
    tracing::info!(
        host = %controller.config().host.id,
        database = %controller.store().url(),
        root = %controller.root().path().display(),
        listen = %controller.config().http.listen,
        interval = %humantime::format_duration(controller.config().r#loop.interval),
        dry_run = controller.config().r#loop.dry_run,
        switched_off = %crate::switches::Switches::from(controller.config()).off().join(","),
        "controller started"
    );
    if controller.config().r#loop.dry_run {
        tracing::warn!(
            "observe only (loop.dry_run): every pass plans and reports, nothing is acted on"
        );
    }
    let service = Service::new(controller, cancel.clone());
    let reclaimer = service.start_reclaimer(cancel.clone());
    let server = tokio::spawn(crate::http::serve(
        listener,
        crate::http::router(Arc::clone(&service), token),
        cancel.clone(),
    ));
    let notifications = tokio::spawn({
        let service = Arc::clone(&service);
        async move { service.listen(&channel).await }
    });
    service.run().await;
    // The loop ends on a signal: let the server finish the requests
    // in flight and the listener let go of its connection.
    cancel.cancel();
    if let Ok(Err(e)) = server.await {
        tracing::error!(error = %e, "HTTP server failed");
    }
    let _ = notifications.await;
    // Runs started by nudges and notifications finish their
    // actions in flight.
    service.drain().await;
    let _ = reclaimer.await;
    tracing::info!("stopped");
    Ok(0)
}

/// Hands `scope` to the daemon that holds the host's lock, over its HTTP
/// API at `http.listen`; prints its answer and returns the exit code it
/// stands for. `None` when no daemon answers there (the holder may be
/// another `once`): the caller then waits for the lock.
async fn nudge_daemon(
    config: &Config,
    scope: &Scope,
    force: bool,
    json: bool,
) -> Result<Option<u8>, Error> {
    let base = Client::base_for(config.http.listen);
    let token = (!config.http.token.is_empty()).then_some(config.http.token.as_str());
    // The daemon bounds each run by loop.pass_timeout; leave it room to
    // answer after that.
    let client = Client::new(
        &base,
        token,
        config.r#loop.pass_timeout + Duration::from_secs(30),
    )?;
    tracing::info!(
        host = %config.host.id,
        url = %base,
        "another instance holds this host's lock; asking it to reconcile"
    );
    match client.nudge(scope, force).await {
        Ok(answer) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                print!("{}", crate::status::render_answer(&base, &answer));
            }
            say_busy(&crate::client::busy_in(&answer));
            Ok(Some(crate::client::exit_code_of(&answer)))
        }
        // Nothing there, or a daemon that is stopping or timed out (a 503
        // without a pass's answer; one with it is an answer, above): the
        // lock will come free.
        Err(e @ ClientError::Unreachable { .. })
        | Err(
            e @ ClientError::Refused {
                status: reqwest::StatusCode::SERVICE_UNAVAILABLE,
                ..
            },
        ) => {
            tracing::warn!(error = %e, "the instance holding the lock did not take the nudge; waiting for the lock");
            Ok(None)
        }
        // A daemon that answers but refuses (a wrong token, say) will go on
        // holding the lock: waiting would never end.
        Err(e) => Err(Error::Runtime(anyhow::anyhow!(
            "the running controller refused the nudge: {e} (check http.token)"
        ))),
    }
}

/// Takes the host's lock, waiting while another instance holds it; `None`
/// when interrupted first.
async fn wait_for_host_lock(
    controller: &Controller,
    cancel: &CancellationToken,
) -> Result<Option<crate::store::lock::HostLock>, Error> {
    let host = &controller.config().host.id;
    let mut waiting = Waiting {
        host,
        cancel,
        said: false,
    };
    leader::wait_for_host_lock(controller.store(), host, &mut waiting).await
}

/// `once`'s wait for the lock: said once, given up on the first failure
/// or on a signal.
struct Waiting<'a> {
    host: &'a str,
    cancel: &'a CancellationToken,
    said: bool,
}

impl leader::LockWait for Waiting<'_> {
    type Error = Error;

    async fn busy(&mut self) -> Result<(), Error> {
        if !self.said {
            tracing::warn!(
                host = self.host,
                "another instance is acting for this host; waiting for it to finish or stop"
            );
            self.said = true;
        }
        Ok(())
    }

    async fn failed(&mut self, e: crate::store::StoreError) -> Result<(), Error> {
        Err(e.into())
    }

    async fn pause(&mut self) -> bool {
        tokio::select! {
            _ = self.cancel.cancelled() => false,
            _ = tokio::time::sleep(leader::STANDBY_RETRY) => true,
        }
    }
}

/// Validates the root, connects, refuses to start beside a controller of
/// another database on the same agents (the scan lock, held while the
/// returned value lives), migrates when `database.auto_migrate`, and
/// refuses a root that holds a main repository of this host's rows.
async fn start(
    config: Config,
    own_files: &OwnFiles,
) -> Result<(Controller, crate::scan_lock::ScanLock), Error> {
    let owner = config.worktrees.owner_uid().map_err(Error::Usage)?;
    // A named cgroup parent outside the v2 hierarchy is a typo to fix, not
    // an error for every pass to repeat.
    crate::cgroup::Parent::resolve(
        &config.processes.cgroup_parent,
        nix::unistd::geteuid().is_root(),
    )
    .map_err(Error::Usage)?;
    let root = WorktreeRoot::prepare_apart_from(&config.worktrees.root, &own_files.kept(), owner)
        .map_err(root_refused)?;
    let store = Store::open_with(&config.database.url, true, (&config.database).into()).await?;
    let claim = crate::scan_lock::Claim::of(&config, &store).await?;
    let scan_lock = crate::scan_lock::take(&claim).await.map_err(|e| match e {
        crate::scan_lock::ScanLockError::Refused(why) => Error::Usage(why),
        e => e.into(),
    })?;
    if config.database.auto_migrate {
        store.migrate().await?;
    }
    // A row is untrusted input and the pass guards each action on its own;
    // this only turns a root that would hold a repository into a
    // configuration error at start. Rows that cannot be read now are the
    // pass's to report.
    match store.host_rows(&config.host.id).await {
        Ok(rows) => {
            let kept: Vec<Kept> = rows
                .repositories
                .iter()
                .map(|path| Kept {
                    what: "the main repository",
                    path,
                })
                .collect();
            root.refuse_containing(&kept).map_err(root_refused)?;
        }
        Err(e) => tracing::warn!(
            error = %e,
            "cannot read the main repositories of this host's rows; the root is not checked against them"
        ),
    }
    Ok((Controller::new(config, store, root), scan_lock))
}

fn root_refused(e: crate::root::RootError) -> Error {
    Error::Usage(format!(
        "{e} (set worktrees.root to a dedicated directory such as /tmp/booworktrees)"
    ))
}

/// The controller's own files, which the root must never contain.
struct OwnFiles {
    database: Option<PathBuf>,
    config: Option<PathBuf>,
}

impl OwnFiles {
    fn of(config: &Config, config_file: Option<PathBuf>) -> OwnFiles {
        OwnFiles {
            database: sqlite_file(&config.database.url),
            config: config_file,
        }
    }

    fn kept(&self) -> Vec<Kept<'_>> {
        let database = self.database.iter().map(|path| Kept {
            what: "the database file (database.url)",
            path,
        });
        let config = self.config.iter().map(|path| Kept {
            what: "the configuration file",
            path,
        });
        database.chain(config).collect()
    }
}

/// The file of a `sqlite:` URL, as the store's driver reads the URL; `None`
/// for PostgreSQL and in-memory databases.
fn sqlite_file(url: &str) -> Option<PathBuf> {
    use std::str::FromStr;
    if !url.starts_with("sqlite:") || url.contains("mode=memory") {
        return None;
    }
    let opts = sqlx::sqlite::SqliteConnectOptions::from_str(url).ok()?;
    let file = opts.get_filename();
    // The driver's name for `sqlite::memory:`.
    let in_memory = file
        .to_str()
        .is_some_and(|f| f.starts_with("file:sqlx-in-memory-"));
    (!in_memory).then(|| file.to_path_buf())
}

fn scope_of(args: &ScopeArgs) -> Scope {
    match (&args.chat, &args.session) {
        (Some(c), _) => Scope::Chat(c.clone()),
        (None, Some(s)) => Scope::Session(s.clone()),
        (None, None) => Scope::Host,
    }
}

fn print_report(report: &PassReport, json: bool) -> Result<(), Error> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(())
}

/// Logs SIGHUP and otherwise ignores it, from now until the process ends.
///
/// SIGHUP's default action kills the process at once, mid-action: a closed
/// terminal or a log-rotation script that signals "reload" would stop a
/// removal half way. The configuration is read once, at start (a reload
/// would have to swap the root, the labels and the lock under a pass in
/// flight); the log line says so, and a restart applies a changed file.
/// Installed first, before anything that could be interrupted.
fn ignore_hangup() -> Result<tokio::task::JoinHandle<()>, Error> {
    use tokio::signal::unix::{signal, SignalKind};
    // Registering replaces the default action for the life of the process,
    // even once this stream is dropped (tokio never restores it).
    let mut hangup = signal(SignalKind::hangup())
        .map_err(|e| Error::Runtime(anyhow::anyhow!("cannot take over SIGHUP: {e}")))?;
    Ok(tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!(
                "SIGHUP ignored: the configuration is read only at start; restart to apply a changed one"
            );
        }
    }))
}

/// Cancels `token` on SIGINT or SIGTERM: no new action starts, the ones in
/// flight finish.
fn shutdown_on_signal(token: CancellationToken) -> tokio::task::JoinHandle<()> {
    // Taken over before returning, not in the task: a signal between the
    // spawn and the task's first poll would otherwise kill the process.
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    tokio::spawn(async move {
        let mut term = match term {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping after the actions in flight"),
            _ = term.recv() => tracing::info!("SIGTERM: stopping after the actions in flight"),
        }
        token.cancel();
    })
}
