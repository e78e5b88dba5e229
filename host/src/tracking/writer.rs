//! The MLflow writer: a background thread that batches, spools and sends a run's records.
//!
//! The training thread only pushes onto an unbounded channel. The writer drains the channel,
//! packs what it got into requests within MLflow's batch limits, appends them to the spool and
//! fsyncs it, then sends them in order. A transient failure (no connection, a timeout, 429, 5xx)
//! is retried with exponential backoff and jitter; new records keep going to the spool meanwhile.
//! When one request has failed for longer than the retry budget, the writer stops sending and
//! only spools, and `pretext sync` delivers the rest later.

use std::collections::VecDeque;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::{Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::Tracker;
use super::client::{Client, RequestError};
use super::records::{BatchBuilder, MAX_ITEMS, Metric, Pair, Record};
use super::spool::{Entry, RemoteState, Spool, read_state, write_state};
use super::target::MlflowTarget;
use crate::store::{MetricPoint, RunStatus, StoreError};

/// Maximum wait between two attempts at one request.
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// First wait after a failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// `log-batch` requests the writer keeps in flight at once. A server with a SQL store spends most
/// of a request parsing it and building rows in Python. Several server workers (`mlflow server`
/// starts four by default) do that in parallel, so on a two-core machine two requests deliver
/// about twice as many points per second as one (measured in `docs/benchmarks.md`).
pub const REQUESTS_IN_FLIGHT: usize = 2;
/// `log-batch` requests sent in one round, between two appends to the spool.
const REQUESTS_PER_ROUND: usize = 16;

/// The writer's delivery summary, for the run summary and `pretext sync`.
#[derive(Debug, Clone)]
pub struct WriterReport {
    pub uri: String,
    /// The MLflow run id, once the run exists on the server.
    pub remote_run_id: Option<String>,
    /// Every spooled record was delivered or rejected for good, so the spool was removed.
    pub complete: bool,
    /// Requests sent successfully.
    pub sent: u64,
    /// Records still in the spool.
    pub pending: usize,
    /// Rejections and the reason for giving up, one message each.
    pub errors: Vec<String>,
    pub spool_dir: PathBuf,
}

/// The result of one delivery attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A request was sent (or rejected for good) and acknowledged.
    Sent,
    /// Nothing to send.
    Idle,
    /// The request failed and may be retried after this long.
    Wait(Duration),
    /// The retry budget ran out, or the server refused the run itself.
    GaveUp,
}

/// The spool of one run and the server it goes to; used by the writer thread and by
/// `pretext sync`.
pub struct Delivery {
    client: Client,
    run_dir: PathBuf,
    uri: String,
    spool: Spool,
    queue: VecDeque<Entry>,
    state: Option<RemoteState>,
    budget: Duration,
    failing_since: Option<Instant>,
    backoff: Duration,
    given_up: bool,
    sent: u64,
    errors: Vec<String>,
}

impl Delivery {
    /// Opens the spool of `run_dir` for delivery to `target`.
    ///
    /// # Errors
    ///
    /// Returns the spool's I/O error or the client's construction error.
    pub fn open(run_dir: &Path, target: &MlflowTarget) -> Result<Self, String> {
        let client = Client::new(target)?;
        let (spool, pending) = Spool::open(run_dir).map_err(|error| error.to_string())?;
        let state = read_state(run_dir).filter(|state| state.uri == target.uri);
        Ok(Self {
            client,
            run_dir: run_dir.to_path_buf(),
            uri: target.uri.clone(),
            spool,
            queue: pending.into(),
            state,
            budget: target.retry_budget,
            failing_since: None,
            backoff: FIRST_BACKOFF,
            given_up: false,
            sent: 0,
            errors: Vec::new(),
        })
    }

    /// Spools records and queues them for sending.
    ///
    /// # Errors
    ///
    /// Returns the spool's write error.
    pub fn enqueue(&mut self, records: Vec<Record>) -> std::io::Result<()> {
        let entries = self.spool.append(records)?;
        self.queue.extend(entries);
        Ok(())
    }

    /// Whether nothing is waiting to be sent.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty()
    }

    /// Whether the writer stopped sending.
    pub fn given_up(&self) -> bool {
        self.given_up
    }

    /// Sends the next request once.
    pub fn step(&mut self) -> Step {
        if self.given_up {
            return Step::GaveUp;
        }
        let Some(head) = self.queue.front() else {
            return Step::Idle;
        };
        if matches!(head.record, Record::Batch { .. })
            && let Some(run_id) = self.state.as_ref().map(|state| state.run_id.clone())
        {
            return self.send_batches(&run_id);
        }
        let first_seq = head.seq;
        let (result, covered) = self.send_head();
        match result {
            Ok(()) => {
                self.acknowledge(0..covered);
                self.sent += 1;
                self.reachable();
                Step::Sent
            }
            Err(RequestError::Transient { message, retry_after }) => {
                self.retry_later(first_seq, &message, retry_after)
            }
            Err(RequestError::Rejected { status, message }) => {
                let record = self.queue[0].record.clone();
                self.rejected(&record, 0..covered, status, &message).unwrap_or(Step::Sent)
            }
        }
    }

    /// Sends the batches at the head of the queue, up to [`REQUESTS_PER_ROUND`] `log-batch`
    /// requests, with [`REQUESTS_IN_FLIGHT`] of them in flight at any moment. Each sender thread
    /// takes the next request as soon as the server responds to its last one. Metric points carry
    /// their own step and timestamp, and a param cannot change once logged, so the order in which
    /// these requests land does not matter. A batch that sets tags is sent only at the head, so
    /// tags keep their order. After a transient failure no further request of the round starts.
    fn send_batches(&mut self, run_id: &str) -> Step {
        let mut requests: Vec<(Range<usize>, Record)> = Vec::new();
        let mut start = 0;
        while requests.len() < REQUESTS_PER_ROUND && start < self.queue.len() {
            // One request contains at most MAX_ITEMS entries, and every batch record at least one.
            let records: Vec<&Record> = self
                .queue
                .range(start..)
                .take(MAX_ITEMS + 1)
                .map(|entry| &entry.record)
                .take_while(|record| matches!(record, Record::Batch { .. }))
                .collect();
            if records.is_empty() {
                break;
            }
            let (merged, covered) = BatchBuilder::merge(&records);
            if !requests.is_empty()
                && matches!(&merged, Record::Batch { tags, .. } if !tags.is_empty())
            {
                break;
            }
            requests.push((start..start + covered, merged));
            start += covered;
        }

        let client = &self.client;
        let next = AtomicUsize::new(0);
        let failing = AtomicBool::new(false);
        let answers: Vec<Mutex<Option<Result<(), RequestError>>>> =
            requests.iter().map(|_| Mutex::new(None)).collect();
        let sender = || {
            while !failing.load(Ordering::Relaxed) {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some((_, Record::Batch { metrics, params, tags })) = requests.get(index) else {
                    return;
                };
                let result = client.log_batch(run_id, metrics, params, tags);
                if matches!(result, Err(RequestError::Transient { .. })) {
                    failing.store(true, Ordering::Relaxed);
                }
                *answers[index].lock().unwrap_or_else(PoisonError::into_inner) = Some(result);
            }
        };
        std::thread::scope(|scope| {
            for _ in 1..REQUESTS_IN_FLIGHT.min(requests.len()) {
                scope.spawn(sender);
            }
            sender();
        });
        let results: Vec<Result<(), RequestError>> = answers
            .into_iter()
            .map(|answer| {
                answer.into_inner().unwrap_or_else(PoisonError::into_inner).unwrap_or_else(|| {
                    Err(RequestError::Transient {
                        message: "not sent after an earlier request of the round failed".to_owned(),
                        retry_after: None,
                    })
                })
            })
            .collect();

        // From the last request back, so that the ranges in front stay valid while delivered
        // records leave the queue.
        let mut retry: Option<(u64, String, Option<Duration>)> = None;
        let mut outcome = Step::Sent;
        for ((range, record), result) in requests.into_iter().zip(results).rev() {
            match result {
                Ok(()) => {
                    self.acknowledge(range);
                    self.sent += 1;
                }
                Err(RequestError::Transient { message, retry_after }) => {
                    retry = Some((self.queue[range.start].seq, message, retry_after));
                }
                Err(RequestError::Rejected { status, message }) => {
                    if let Some(step) = self.rejected(&record, range, status, &message) {
                        outcome = step;
                    }
                }
            }
        }
        if outcome == Step::GaveUp {
            return outcome;
        }
        match retry {
            Some((seq, message, retry_after)) => self.retry_later(seq, &message, retry_after),
            None => {
                self.reachable();
                Step::Sent
            }
        }
    }

    /// Logs the end of an outage and resets the backoff after a request went through.
    fn reachable(&mut self) {
        if let Some(since) = self.failing_since.take() {
            tracing::info!(
                uri = %self.uri,
                seconds = since.elapsed().as_secs_f64(),
                "MLflow server reachable again; sending the spool"
            );
        }
        self.backoff = FIRST_BACKOFF;
    }

    /// Sends until the queue is empty or the writer gives up, sleeping between retries.
    pub fn deliver_all(&mut self) {
        loop {
            match self.step() {
                Step::Sent => {}
                Step::Idle | Step::GaveUp => return,
                Step::Wait(wait) => std::thread::sleep(wait),
            }
        }
    }

    fn send_head(&mut self) -> (Result<(), RequestError>, usize) {
        let head = &self.queue[0].record;
        if let Record::Start { experiment, run_name, local_run_id, start_time, tags, .. } = head {
            let result = self.start(experiment, run_name, local_run_id, *start_time, tags);
            return (result.map(|state| self.state = Some(state)), 1);
        }
        let Some(state) = &self.state else {
            return (
                Err(RequestError::Rejected {
                    status: 0,
                    message: "the spool names no MLflow run, and its first record is not the \
                              run's creation"
                        .to_owned(),
                }),
                1,
            );
        };
        match head {
            Record::Artifact { file, path } => {
                let local = self.run_dir.join(file);
                (self.client.upload_artifact(&state.artifact_uri, path, &local), 1)
            }
            Record::End { status, end_time } => {
                (self.client.update_run(&state.run_id, status, *end_time), 1)
            }
            Record::Start { .. } | Record::Batch { .. } => unreachable!("handled above"),
        }
    }

    fn start(
        &self,
        experiment: &str,
        run_name: &str,
        local_run_id: &str,
        start_time: i64,
        tags: &[Pair],
    ) -> Result<RemoteState, RequestError> {
        let experiment_id = self.client.experiment_id(experiment)?;
        // A run created by an attempt whose response was lost carries our tag, so reuse it.
        let info = match self.client.find_run(&experiment_id, local_run_id)? {
            Some(info) => {
                // A resumed run shows its earlier attempt's FAILED or KILLED until it ends.
                self.client.set_running(&info.run_id)?;
                info
            }
            None => self.client.create_run(&experiment_id, run_name, start_time, tags)?,
        };
        let state = RemoteState {
            uri: self.uri.clone(),
            experiment_id,
            run_id: info.run_id,
            artifact_uri: info.artifact_uri,
        };
        if let Err(error) = write_state(&self.run_dir, &state) {
            tracing::warn!("cannot record the MLflow run id: {error}");
        }
        tracing::info!(uri = %self.uri, mlflow_run = %state.run_id, "MLflow run ready");
        Ok(state)
    }

    /// Removes delivered (or rejected) records from the queue and records them in the spool.
    fn acknowledge(&mut self, range: Range<usize>) {
        let seqs: Vec<u64> = self.queue.drain(range).map(|entry| entry.seq).collect();
        if let Err(error) = self.spool.ack(&seqs) {
            tracing::warn!("cannot record delivered spool records: {error}");
        }
    }

    fn retry_later(&mut self, seq: u64, message: &str, retry_after: Option<Duration>) -> Step {
        let since = *self.failing_since.get_or_insert_with(Instant::now);
        let elapsed = since.elapsed();
        if elapsed >= self.budget {
            let reason = format!(
                "MLflow server {} still failing after {:.0} s ({message}); stopped sending, \
                 {} records wait in {}",
                self.uri,
                elapsed.as_secs_f64(),
                self.queue.len(),
                self.spool.dir().display()
            );
            tracing::error!(spool_record = seq, "{reason}");
            self.errors.push(reason);
            self.given_up = true;
            return Step::GaveUp;
        }
        if self.backoff == FIRST_BACKOFF {
            tracing::warn!(uri = %self.uri, spool_record = seq, "MLflow request failed, retrying: {message}");
        } else {
            tracing::debug!(uri = %self.uri, spool_record = seq, "MLflow request failed again: {message}");
        }
        let jittered = self.backoff.mul_f64(0.5 + 0.5 * rand::random::<f64>());
        let wait = retry_after.unwrap_or(jittered).max(jittered).min(self.budget - elapsed);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        Step::Wait(wait)
    }

    /// Handles a 4xx response to `record`, which covers `range` of the queue. A rejection of the
    /// run itself stops sending and returns [`Step::GaveUp`]. Any other is logged and dropped.
    fn rejected(
        &mut self,
        record: &Record,
        range: Range<usize>,
        status: u16,
        message: &str,
    ) -> Option<Step> {
        let fatal = matches!(record, Record::Start { .. }) || matches!(status, 0 | 401 | 403 | 404);
        let subject = describe_record(record, message);
        if fatal && !matches!(record, Record::Artifact { .. }) {
            let reason = format!(
                "MLflow server {} rejected {subject} (HTTP {status}: {message}); stopped sending, {} \
                 records wait in {}",
                self.uri,
                self.queue.len(),
                self.spool.dir().display()
            );
            tracing::error!("{reason}");
            self.errors.push(reason);
            self.given_up = true;
            return Some(Step::GaveUp);
        }
        let reason =
            format!("MLflow server {} rejected {subject}: HTTP {status}: {message}", self.uri);
        tracing::error!("{reason}");
        self.errors.push(reason);
        self.acknowledge(range);
        self.failing_since = None;
        self.backoff = FIRST_BACKOFF;
        None
    }

    /// Ends delivery: removes the spool when everything was delivered.
    pub fn report(self) -> WriterReport {
        let pending = self.queue.len();
        let complete = pending == 0 && !self.given_up && self.spool.is_drained();
        let spool_dir = self.spool.dir().to_path_buf();
        if complete && let Err(error) = self.spool.remove() {
            tracing::warn!("cannot remove the delivered spool: {error}");
        }
        WriterReport {
            uri: self.uri,
            remote_run_id: self.state.map(|state| state.run_id),
            complete,
            sent: self.sent,
            pending,
            errors: self.errors,
            spool_dir,
        }
    }
}

/// Names what a rejected record carried, and the key the server's message mentions.
fn describe_record(record: &Record, message: &str) -> String {
    match record {
        Record::Start { experiment, .. } => {
            format!("creating the run in experiment `{experiment}`")
        }
        Record::Batch { metrics, params, tags } => {
            let keys = metrics
                .iter()
                .map(|metric| ("metric", &metric.key))
                .chain(params.iter().map(|param| ("param", &param.key)))
                .chain(tags.iter().map(|tag| ("tag", &tag.key)));
            let mut first = None;
            for (kind, key) in keys {
                if message.contains(key.as_str()) {
                    return format!("{kind} `{key}`");
                }
                first.get_or_insert((kind, key));
            }
            let count = metrics.len() + params.len() + tags.len();
            match first {
                Some((kind, key)) => {
                    format!("a batch of {count} entries starting at {kind} `{key}`")
                }
                None => "an empty batch".to_owned(),
            }
        }
        Record::Artifact { path, .. } => format!("artifact `{path}`"),
        Record::End { status, .. } => format!("the run's end ({status})"),
    }
}

/// A message from the tracker to the writer thread.
enum Message {
    Params(Vec<(String, String)>),
    Tags(Vec<(String, String)>),
    Metrics(Vec<MetricPoint>),
    Artifact { file: String, path: String },
    End { status: RunStatus, end_time: i64 },
    Finish,
}

/// The MLflow side of a run. It queues records on an unbounded channel for the writer thread,
/// so logging never blocks on the network.
pub struct MlflowTracker {
    sender: Sender<Message>,
    handle: Option<JoinHandle<WriterReport>>,
    run_dir: PathBuf,
    writer_gone: bool,
}

/// The run fields the MLflow run is created with.
#[derive(Debug, Clone)]
pub struct RunStart {
    pub local_run_id: String,
    pub run_name: String,
    pub start_time: i64,
    /// System tags (`mlflow.*`) and `pretext.run_id`, sent with the run's creation.
    pub tags: Vec<(String, String)>,
}

fn pairs(values: Vec<(String, String)>) -> impl Iterator<Item = Pair> {
    values.into_iter().map(|(key, value)| Pair { key, value })
}

impl MlflowTracker {
    /// Opens the run's spool, queues the run's creation and starts the writer thread.
    ///
    /// # Errors
    ///
    /// Returns a message when the spool cannot be created or the thread cannot start.
    pub fn start(target: &MlflowTarget, run_dir: &Path, run: RunStart) -> Result<Self, String> {
        let mut delivery = Delivery::open(run_dir, target)?;
        let start = Record::Start {
            uri: target.uri.clone(),
            experiment: target.experiment.clone(),
            run_name: run.run_name,
            local_run_id: run.local_run_id,
            start_time: run.start_time,
            tags: pairs(run.tags).collect(),
        };
        delivery.enqueue(vec![start]).map_err(|error| error.to_string())?;
        let (sender, receiver) = std::sync::mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("mlflow-writer".into())
            .spawn(move || run_writer(delivery, &receiver))
            .map_err(|error| format!("cannot start the MLflow writer thread: {error}"))?;
        Ok(Self {
            sender,
            handle: Some(handle),
            run_dir: run_dir.to_path_buf(),
            writer_gone: false,
        })
    }

    fn send(&mut self, message: Message) {
        let ending = ends_run(&message);
        if self.sender.send(message).is_err() && !self.writer_gone {
            self.writer_gone = true;
            tracing::error!(
                "the MLflow writer thread stopped; the rest of the run is only in the local store"
            );
        }
        if ending && let Some(handle) = &self.handle {
            handle.thread().unpark();
        }
    }

    /// Queues the run's end, then waits until the writer has delivered everything or given up.
    pub fn finish(mut self, status: RunStatus, end_time: i64) -> WriterReport {
        self.send(Message::End { status, end_time });
        self.send(Message::Finish);
        let handle = self.handle.take().expect("finish runs once");
        handle.join().unwrap_or_else(|_| WriterReport {
            uri: String::new(),
            remote_run_id: None,
            complete: false,
            sent: 0,
            pending: 0,
            errors: vec!["the MLflow writer thread panicked".to_owned()],
            spool_dir: Spool::folder(&self.run_dir),
        })
    }
}

impl Tracker for MlflowTracker {
    fn log_params(&mut self, params: &[(String, String)]) -> Result<(), StoreError> {
        self.send(Message::Params(params.to_vec()));
        Ok(())
    }

    fn set_tags(&mut self, tags: &[(String, String)]) -> Result<(), StoreError> {
        self.send(Message::Tags(tags.to_vec()));
        Ok(())
    }

    fn log_metrics(&mut self, points: &[MetricPoint]) -> Result<(), StoreError> {
        self.send(Message::Metrics(points.to_vec()));
        Ok(())
    }

    fn log_artifact(&mut self, file: &Path, artifact_path: &str) -> Result<(), StoreError> {
        let relative = file.strip_prefix(&self.run_dir).unwrap_or(file);
        self.send(Message::Artifact {
            file: relative.display().to_string(),
            path: artifact_path.to_owned(),
        });
        Ok(())
    }
}

/// Packs messages into spool records; returns whether `Finish` was among them.
fn pack(messages: Vec<Message>) -> (Vec<Record>, bool) {
    let mut builder = BatchBuilder::default();
    let mut finish = false;
    for message in messages {
        match message {
            Message::Params(params) => pairs(params).for_each(|param| builder.param(param)),
            Message::Tags(tags) => pairs(tags).for_each(|tag| builder.tag(tag)),
            Message::Metrics(points) => {
                points.iter().for_each(|point| builder.metric(Metric::from(point)));
            }
            Message::Artifact { file, path } => builder.other(Record::Artifact { file, path }),
            Message::End { status, end_time } => {
                builder.other(Record::End { status: status.as_str().to_owned(), end_time });
            }
            Message::Finish => finish = true,
        }
    }
    (builder.finish(), finish)
}

/// How long the writer keeps collecting after the first message of a batch. A run that logs every
/// step then sends a few large requests per second instead of one small request (and one spool
/// fsync) per step, which would take CPU from training on the same machine.
const LINGER: Duration = Duration::from_millis(200);

/// Returns whether a message ends the run's stream of records.
fn ends_run(message: &Message) -> bool {
    matches!(message, Message::End { .. } | Message::Finish)
}

/// Takes every message already queued; returns true when the channel closed.
fn drain(receiver: &Receiver<Message>, messages: &mut Vec<Message>) -> bool {
    loop {
        match receiver.try_recv() {
            Ok(message) => messages.push(message),
            Err(TryRecvError::Empty) => return false,
            Err(TryRecvError::Disconnected) => return true,
        }
    }
}

/// Collects messages until `deadline`, or until the run's end arrives when `until_end` is set;
/// returns true when the channel closed.
///
/// The thread sleeps (parks) instead of waiting on the channel, so the training thread's sends
/// wake nothing: a run that logs every step costs one wake-up per [`LINGER`], not one per
/// step. The tracker unparks the thread when it queues the run's end.
fn collect_until(
    receiver: &Receiver<Message>,
    messages: &mut Vec<Message>,
    deadline: Instant,
    until_end: bool,
) -> bool {
    let mut checked = 0;
    loop {
        if drain(receiver, messages) {
            return true;
        }
        if until_end && messages[checked..].iter().any(ends_run) {
            return false;
        }
        checked = messages.len();
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::park_timeout(deadline - now);
    }
}

fn run_writer(mut delivery: Delivery, receiver: &Receiver<Message>) -> WriterReport {
    let mut finishing = false;
    // When the last failed request may be sent again; records arriving before then are only
    // spooled.
    let mut retry_at: Option<Instant> = None;
    loop {
        let mut messages = Vec::new();
        let waiting = retry_at.filter(|at| *at > Instant::now());
        if let Some(at) = waiting {
            if finishing {
                std::thread::sleep(at.saturating_duration_since(Instant::now()));
            } else {
                finishing |= collect_until(receiver, &mut messages, at, false);
            }
        } else if !finishing && (delivery.is_idle() || delivery.given_up()) {
            // Nothing to send: block until the run logs something, then gather the rest of
            // the batch.
            match receiver.recv() {
                Ok(message) => {
                    let ending = ends_run(&message);
                    messages.push(message);
                    if !ending {
                        let deadline = Instant::now() + LINGER;
                        finishing |= collect_until(receiver, &mut messages, deadline, true);
                    }
                }
                Err(_) => finishing = true,
            }
        }
        finishing |= drain(receiver, &mut messages);
        let (records, finish) = pack(messages);
        finishing |= finish;
        if !records.is_empty()
            && let Err(error) = delivery.enqueue(records)
        {
            tracing::error!("cannot append to the MLflow spool: {error}");
        }
        if retry_at.is_some_and(|at| at > Instant::now()) {
            continue;
        }
        retry_at = None;
        match delivery.step() {
            Step::Sent => {}
            Step::Idle | Step::GaveUp if finishing => return delivery.report(),
            Step::Idle | Step::GaveUp => {}
            Step::Wait(duration) => retry_at = Some(Instant::now() + duration),
        }
    }
}
