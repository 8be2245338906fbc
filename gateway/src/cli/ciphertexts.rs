//! `fhirseal ciphertexts update`: runs the ciphertext-update job (see [`fhirseal::ctupdate`]) in
//! the foreground, to the end: plans the job for the current period and works on it, with a
//! progress bar on standard error when it is a terminal and plain progress lines otherwise.
//! Several runs (and gateway replicas) sharing the authority's store split the work.
//!
//! `fhirseal ciphertexts reindex`: runs the re-index job ([`fhirseal::reindex`]) in the
//! foreground, to the end.
//!
//! `fhirseal ciphertexts index-secret status|rotate|retire`: the blind-index secret's generations
//! ([`fhirseal::index_secret`]): what they are, making the next one, and finishing a rotation
//! (the re-index walk, then the older generation retired).

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Subcommand;
use fhirseal::config::Config;
use fhirseal::ctupdate::{self, WorkSummary};
use fhirseal::index_secret::{self, IndexKeys, SWITCH};
use fhirseal::reindex::{ReindexSummary, RetireError};
use fhirseal::state::AppState;
use fhirseal_authority::Progress;
use fhirseal_authority::unix_now as now;
use serde_json::json;

/// The ciphertext commands.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Move every sealed header stored on the upstream to the current period (after a
    /// revocation and a period change). Resumable and idempotent.
    Update {
        /// The configuration file [default: the embedded defaults].
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Recompute the blind-index tokens of every sealed resource stored on the upstream, after
    /// the policy's indexes changed (index-bits, a new blind-index element or compound index).
    /// Runs under the gateway's re-index service identity. Idempotent: run it again to resume.
    Reindex {
        /// The configuration file [default: the embedded defaults].
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The blind-index secret's generations: rotate it, then retire the old generation once
    /// every sealed resource is re-indexed (docs/search.md, "Rotating the secret").
    IndexSecret {
        #[command(subcommand)]
        command: IndexSecret,
    },
}

#[derive(Debug, Subcommand)]
enum IndexSecret {
    /// The current generation, and any older one still searched.
    Status {
        /// The configuration file [default: the embedded defaults].
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make the next generation: gateways write its tokens within 30 s and search both
    /// generations until the old one is retired. Refused while a rotation is unfinished.
    Rotate {
        /// The configuration file [default: the embedded defaults].
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Finish a rotation: re-index every sealed resource under the new generation, then stop
    /// searching the old one. Refused in the first 60 s after the rotation, and while a resource
    /// still holds the old generation's tokens. Idempotent: run it again to resume.
    Retire {
        /// The configuration file [default: the embedded defaults].
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
        /// Retire even though resources the re-index key cannot open (blind-index elements only
        /// patient:self may read) still hold the old tokens: they drop out of searches on those
        /// elements until they are next written.
        #[arg(long)]
        force: bool,
    },
}

pub(crate) fn run(args: Args) -> Result<String, String> {
    match args.command {
        Command::Update { config, json } => on_runtime(config, |config| update(config, json)),
        Command::Reindex { config, json } => on_runtime(config, |config| reindex(config, json)),
        Command::IndexSecret { command } => match command {
            IndexSecret::Status { config, json } => {
                on_runtime(config, |config| index_status(config, json))
            }
            IndexSecret::Rotate { config, json } => {
                on_runtime(config, |config| index_rotate(config, json))
            }
            IndexSecret::Retire {
                config,
                json,
                force,
            } => on_runtime(config, |config| index_retire(config, json, force)),
        },
    }
}

/// The generations as JSON: `current`, `searched` (current first), `since` and, during a
/// rotation, `retire_after`.
fn generations_json(keys: &IndexKeys) -> serde_json::Value {
    let switch = i64::try_from(SWITCH.as_secs()).unwrap_or(i64::MAX);
    json!({
        "current": keys.current().generation().get(),
        "searched": keys.searched().iter().map(|k| k.generation().get()).collect::<Vec<_>>(),
        "since": keys.since(),
        "retire_after": keys
            .older()
            .next()
            .and(keys.since())
            .map(|since| since.saturating_add(switch)),
    })
}

/// Runs `call` with the authority of `config`'s gateway on a blocking thread.
async fn with_authority<T: Send + 'static>(
    config: Config,
    call: impl FnOnce(&fhirseal_authority::Authority) -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let state = build(config).await?;
    let authority = std::sync::Arc::clone(&state.authority);
    tokio::task::spawn_blocking(move || call(&authority))
        .await
        .map_err(|_| "the key authority call did not complete".to_string())?
}

async fn index_status(config: Config, json: bool) -> Result<String, String> {
    let keys = with_authority(config, |a| IndexKeys::load(a).map_err(|e| e.to_string())).await?;
    if json {
        return Ok(generations_json(&keys).to_string());
    }
    let mut text = format!(
        "blind-index secret: generation {}",
        keys.current().generation()
    );
    let older: Vec<String> = keys.older().map(|g| g.to_string()).collect();
    if !older.is_empty() {
        text.push_str(&format!(
            "; generation {} still searched: a rotation is in progress, finish it with \
             `fhirseal ciphertexts index-secret retire`",
            older.join(", ")
        ));
    }
    Ok(text)
}

async fn index_rotate(config: Config, json: bool) -> Result<String, String> {
    let now = now();
    let keys = with_authority(config, move |a| {
        index_secret::rotate(a, now).map_err(|e| e.to_string())?;
        IndexKeys::load(a).map_err(|e| e.to_string())
    })
    .await?;
    if json {
        return Ok(generations_json(&keys).to_string());
    }
    Ok(format!(
        "blind-index secret: generation {} made. Running gateways write its tokens within {} s \
         and search both generations meanwhile. In {} s, run `fhirseal ciphertexts index-secret \
         retire`: it re-indexes every sealed resource under generation {}, then stops searching \
         the old one.",
        keys.current().generation(),
        index_secret::REFRESH.as_secs(),
        SWITCH.as_secs(),
        keys.current().generation()
    ))
}

async fn index_retire(config: Config, json: bool, force: bool) -> Result<String, String> {
    let state = build(config).await?;
    let outcome =
        fhirseal::reindex::retire_older_generations(&state, now(), force, reindex_progress()).await;
    match outcome {
        Ok(done) => {
            if json {
                let mut out = summary_json(&done.reindex);
                out["current"] = json!(done.current.get());
                out["retired"] = json!(done.retired.iter().map(|g| g.get()).collect::<Vec<_>>());
                return Ok(out.to_string());
            }
            let retired: Vec<String> = done.retired.iter().map(|g| g.to_string()).collect();
            Ok(format!(
                "{}\nblind-index secret: generation {} retired; searches ask for generation {} \
                 alone (every running gateway within {} s)",
                summary_text(&done.reindex),
                retired.join(", "),
                done.current,
                index_secret::REFRESH.as_secs()
            ))
        }
        Err(RetireError::HeldBack { resources, summary }) => Err(format!(
            "{}\n{}",
            summary_text(&summary),
            RetireError::HeldBack {
                resources,
                summary: ReindexSummary::default(),
            }
        )),
        Err(error) => Err(error.to_string()),
    }
}

/// Progress lines on standard error: every page on a terminal, else every 5 s.
fn reindex_progress() -> impl FnMut(&ReindexSummary) {
    let terminal = std::io::stderr().is_terminal();
    let mut last = Instant::now();
    move |s| {
        if terminal || last.elapsed() >= Duration::from_secs(5) {
            let _ = writeln!(
                std::io::stderr().lock(),
                "progress: {} resources checked, {} re-indexed",
                s.checked,
                s.rewritten
            );
            last = Instant::now();
        }
    }
}

fn summary_json(summary: &ReindexSummary) -> serde_json::Value {
    json!({
        "checked": summary.checked,
        "rewritten": summary.rewritten,
        "unchanged": summary.unchanged,
        "unreadable": summary.unreadable,
        "older": summary.older,
        "failed": summary.failed.iter().map(|(name, e)| json!({"resource": name, "error": e.to_string()})).collect::<Vec<_>>(),
    })
}

fn summary_text(summary: &ReindexSummary) -> String {
    let mut text = format!(
        "{} sealed resources checked: {} re-indexed, {} already up to date",
        summary.checked, summary.rewritten, summary.unchanged
    );
    if !summary.unreadable.is_empty() {
        text.push_str(&format!(
            "\n{} left as they were: a blind-index element does not open with the re-index key (only patient:self may read it): {}",
            summary.unreadable.len(),
            summary.unreadable.join(", ")
        ));
    }
    text
}

/// Loads the configuration and runs `job` with it to the end on a runtime of its own.
fn on_runtime<F: Future<Output = Result<String, String>>>(
    config: Option<PathBuf>,
    job: impl FnOnce(Config) -> F,
) -> Result<String, String> {
    let config = Config::load(config.as_deref(), std::env::vars()).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("the async runtime cannot start: {e}"))?;
    let result = runtime.block_on(job(config));
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

async fn reindex(config: Config, json: bool) -> Result<String, String> {
    let state = build(config).await?;
    let summary = fhirseal::reindex::reindex(&state, now(), reindex_progress())
        .await
        .map_err(|e| e.to_string())?;
    let text = if json {
        summary_json(&summary).to_string()
    } else {
        summary_text(&summary)
    };
    if let Some((name, error)) = summary.failed.first() {
        return Err(format!(
            "{text}\n{} resource(s) failed and keep their old tokens; run again. First: {name}: {error}",
            summary.failed.len()
        ));
    }
    Ok(text)
}

/// The gateway's state, built on a blocking thread, as every authority call: its PostgreSQL
/// client is synchronous.
async fn build(config: Config) -> Result<AppState, String> {
    tokio::task::spawn_blocking(move || AppState::build(config, now()))
        .await
        .map_err(|_| "the gateway's state could not be built".to_string())?
        .map_err(|e| e.to_string())
}

async fn update(config: Config, json: bool) -> Result<String, String> {
    let state = build(config).await?;
    let Some((job, added)) = ctupdate::plan(&state, now())
        .await
        .map_err(|e| e.to_string())?
    else {
        let authority = std::sync::Arc::clone(&state.authority);
        let latest = tokio::task::spawn_blocking(move || authority.latest_update_job())
            .await
            .map_err(|_| "the authority could not be read".to_string())?
            .map_err(|e| e.to_string())?;
        let period = latest.map(|(_, p)| p.target_period).unwrap_or_default();
        return Ok(if json {
            json!({"finished": true, "target_period": period, "already_done": true}).to_string()
        } else {
            format!("every stored header is already at period {period}: nothing to do")
        });
    };
    let mut bar = Bar::new(std::io::stderr().is_terminal());
    let worker = ctupdate::worker_name();
    let result = ctupdate::work(&state, job, &worker, |p| bar.show(p)).await;
    bar.end();
    let summary = result.map_err(|e| e.to_string())?;
    let progress = state
        .authority
        .update_job_progress(job)
        .map_err(|e| e.to_string())?;
    if !summary.failed.is_empty() {
        let first = &summary.failed[0];
        return Err(format!(
            "{} chunk(s) failed and stay to do (job {job} is not finished); first: chunk {}: {}",
            summary.failed.len(),
            first.key,
            first.error
        ));
    }
    Ok(if json {
        json!({
            "job": job.get(),
            "target_period": progress.target_period,
            "chunks_planned": added,
            "chunks_total": progress.chunks_total,
            "chunks_done": progress.chunks_done,
            "headers_moved": progress.headers_moved,
            "this_run": {"chunks_done": summary.chunks_done, "headers_moved": summary.headers_moved},
            "finished": progress.finished,
        })
        .to_string()
    } else {
        text(job.get(), &progress, &summary)
    })
}

fn text(job: u64, progress: &Progress, summary: &WorkSummary) -> String {
    let state = if progress.finished {
        "finished"
    } else {
        "not finished (other workers hold chunks; run again or let the gateway's task end it)"
    };
    format!(
        "job {job} to period {}: {state}\n{}/{} chunks done, {} headers moved ({} chunks and {} \
         headers by this run)",
        progress.target_period,
        progress.chunks_done,
        progress.chunks_total,
        progress.headers_moved,
        summary.chunks_done,
        summary.headers_moved
    )
}

/// The progress display: a redrawn bar on a terminal, a line every few seconds otherwise.
struct Bar {
    terminal: bool,
    drawn: bool,
    last: Option<Instant>,
}

impl Bar {
    fn new(terminal: bool) -> Self {
        Self {
            terminal,
            drawn: false,
            last: None,
        }
    }

    fn show(&mut self, p: &Progress) {
        let mut err = std::io::stderr().lock();
        if self.terminal {
            const WIDTH: u64 = 30;
            let filled = (p.chunks_done * WIDTH)
                .checked_div(p.chunks_total)
                .unwrap_or(0)
                .min(WIDTH);
            let bar: String = (0..WIDTH)
                .map(|i| if i < filled { '#' } else { '-' })
                .collect();
            let _ = write!(
                err,
                "\r[{bar}] {}/{} chunks, {} headers",
                p.chunks_done, p.chunks_total, p.headers_moved
            );
            let _ = err.flush();
            self.drawn = true;
        } else if self
            .last
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(5))
        {
            let _ = writeln!(
                err,
                "progress: {}/{} chunks, {} headers moved",
                p.chunks_done, p.chunks_total, p.headers_moved
            );
            self.last = Some(Instant::now());
        }
    }

    fn end(&mut self) {
        if self.drawn {
            let _ = writeln!(std::io::stderr().lock());
        }
    }
}
