//! One engine shared by many callers: the thread that owns the [`Engine`] takes submissions from a
//! channel while it steps, so requests of many auctions arrive at any time and share each forward
//! pass. Each call gets its results back on its own channel (with per-step progress), and a call
//! whose [`Ticket`] is cancelled or past its deadline is aborted: its requests leave the next step
//! and their KV blocks are freed.
//!
//! [`channel`] makes a handle and its inbox; [`serve`] runs an engine on the inbox in the calling
//! thread until every handle is dropped or [`EngineHandle::shutdown`] is called.

use crate::engine::{Engine, Owner, RequestId, StepStats};
use crate::error::{EngineError, Result};
use crate::request::{Outcome, Request};
use crate::runner::ModelRunner;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why and when a caller's work stops: cancelled by the caller (a client that went away) or past
/// its deadline. Clones share the cancellation.
#[derive(Debug, Clone, Default)]
pub struct Ticket {
    cancelled: Arc<AtomicBool>,
    deadline: Option<Instant>,
}

impl Ticket {
    /// A ticket that expires `timeout` from now (never, for `None`).
    pub fn new(timeout: Option<Duration>) -> Self {
        Self {
            cancelled: Arc::default(),
            deadline: timeout.map(|t| Instant::now() + t),
        }
    }

    /// Cancels the work of every holder of this ticket.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
    }

    /// Why the work must stop, if it must: `"cancelled"` or `"deadline exceeded"`.
    pub fn stopped(&self) -> Option<&'static str> {
        if self.cancelled.load(Ordering::Acquire) {
            Some(CANCELLED)
        } else if self.deadline.is_some_and(|d| Instant::now() >= d) {
            Some(DEADLINE)
        } else {
            None
        }
    }

    /// The error of stopped work.
    ///
    /// # Errors
    /// [`EngineError::Aborted`] when the ticket is cancelled or expired.
    pub fn check(&self) -> Result<()> {
        match self.stopped() {
            Some(r) => Err(EngineError::Aborted(r.into())),
            None => Ok(()),
        }
    }
}

/// [`Ticket::stopped`]'s reason for a cancelled ticket.
pub const CANCELLED: &str = "cancelled";
/// [`Ticket::stopped`]'s reason for an expired ticket.
pub const DEADLINE: &str = "deadline exceeded";

/// Live figures of a served engine, updated by its thread after every step.
#[derive(Debug, Default)]
pub struct Gauges {
    /// Steps with a forward pass.
    pub steps: AtomicU64,
    /// Tokens computed.
    pub tokens: AtomicU64,
    /// Tokens sampled or decided.
    pub sampled: AtomicU64,
    /// Sequences running after the last step.
    pub running_seqs: AtomicU64,
    /// Requests waiting for admission after the last step.
    pub waiting: AtomicU64,
    /// Tokens computed per second over the last second or more (f64 bits).
    pub tokens_per_s: AtomicU64,
    /// Steps by sequences in the batch: bucket `k` counts steps with at most
    /// [`BATCH_BUCKETS`]`[k]` sequences (not cumulative; the last bucket takes the rest).
    pub batch_hist: [AtomicU64; BATCH_BUCKETS.len() + 1],
    /// Sum of the steps' batch sizes.
    pub batch_sum: AtomicU64,
}

/// Upper bounds of the batch-size histogram's buckets.
pub const BATCH_BUCKETS: [u64; 8] = [1, 2, 4, 8, 16, 32, 64, 128];

impl Gauges {
    fn record(&self, s: &StepStats, running: usize, waiting: usize) {
        if s.seqs > 0 {
            self.steps.fetch_add(1, Ordering::Relaxed);
            self.tokens.fetch_add(s.tokens as u64, Ordering::Relaxed);
            self.sampled.fetch_add(s.sampled as u64, Ordering::Relaxed);
            let k = BATCH_BUCKETS
                .iter()
                .position(|&b| s.seqs as u64 <= b)
                .unwrap_or(BATCH_BUCKETS.len());
            self.batch_hist[k].fetch_add(1, Ordering::Relaxed);
            self.batch_sum.fetch_add(s.seqs as u64, Ordering::Relaxed);
        }
        self.running_seqs.store(running as u64, Ordering::Relaxed);
        self.waiting.store(waiting as u64, Ordering::Relaxed);
    }

    /// [`Gauges::tokens_per_s`] as a number.
    pub fn tokens_per_second(&self) -> f64 {
        f64::from_bits(self.tokens_per_s.load(Ordering::Relaxed))
    }
}

/// What a call receives.
enum Event {
    /// A step that advanced the call: `sampled` and `finished` count the call's own requests.
    Step(StepStats),
    /// Request `index` of the call is finished.
    Done(usize, Result<Outcome>),
}

enum Command {
    Submit {
        owner: Owner,
        ticket: Ticket,
        reqs: Vec<Request>,
        reply: Sender<Event>,
    },
    AbortOwner(Owner),
    Shutdown,
}

/// Submits work to a served engine; cheap to clone and to share between threads.
#[derive(Clone)]
pub struct EngineHandle {
    tx: Sender<Command>,
    gauges: Arc<Gauges>,
    owners: Arc<AtomicU64>,
}

/// The receiving end of an [`EngineHandle`], consumed by [`serve`].
pub struct Inbox {
    rx: Receiver<Command>,
    gauges: Arc<Gauges>,
}

/// A handle and the inbox its submissions go to.
pub fn channel() -> (EngineHandle, Inbox) {
    let (tx, rx) = mpsc::channel();
    let gauges = Arc::new(Gauges::default());
    (
        EngineHandle {
            tx,
            gauges: gauges.clone(),
            owners: Arc::new(AtomicU64::new(1)),
        },
        Inbox { rx, gauges },
    )
}

fn stopped() -> EngineError {
    EngineError::Backend {
        model: "served engine".into(),
        message: "the engine thread has stopped".into(),
    }
}

impl EngineHandle {
    /// A fresh owner id (one per auction: the unit of fair sharing).
    pub fn new_owner(&self) -> Owner {
        self.owners.fetch_add(1, Ordering::Relaxed)
    }

    /// The engine's live figures.
    pub fn gauges(&self) -> &Gauges {
        &self.gauges
    }

    /// Runs `reqs` for `owner` under `ticket` and waits for all of them; `on_step` sees every step
    /// that advanced them (with `sampled` and `finished` counting these requests only). When one
    /// fails, the owner's other requests are aborted.
    ///
    /// # Errors
    /// The first failure (a rejected submission, a failed request, an abort), or a stopped engine.
    pub fn run(
        &self,
        owner: Owner,
        ticket: &Ticket,
        reqs: Vec<Request>,
        on_step: &mut dyn FnMut(&StepStats),
    ) -> Result<Vec<Outcome>> {
        self.run_each(owner, ticket, reqs, on_step, &mut |_, _| {})
    }

    /// As [`EngineHandle::run`], calling `on_done(index, outcome)` as each request finishes.
    ///
    /// # Errors
    /// As [`EngineHandle::run`].
    pub fn run_each(
        &self,
        owner: Owner,
        ticket: &Ticket,
        reqs: Vec<Request>,
        on_step: &mut dyn FnMut(&StepStats),
        on_done: &mut dyn FnMut(usize, &Outcome),
    ) -> Result<Vec<Outcome>> {
        ticket.check()?;
        let n = reqs.len();
        if n == 0 {
            return Ok(vec![]);
        }
        let (reply, rx) = mpsc::channel();
        self.tx
            .send(Command::Submit {
                owner,
                ticket: ticket.clone(),
                reqs,
                reply,
            })
            .map_err(|_| stopped())?;
        let mut outs: Vec<Option<Outcome>> = (0..n).map(|_| None).collect();
        let mut first_err = None;
        let mut left = n;
        while left > 0 {
            match rx.recv().map_err(|_| stopped())? {
                Event::Step(s) => on_step(&s),
                Event::Done(i, r) => {
                    left -= 1;
                    match r {
                        Ok(o) => {
                            if first_err.is_none() {
                                on_done(i, &o);
                            }
                            outs[i] = Some(o);
                        }
                        Err(e) => {
                            if first_err.is_none() {
                                first_err = Some(e);
                                let _ = self.tx.send(Command::AbortOwner(owner));
                            }
                        }
                    }
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        outs.into_iter()
            .map(|o| o.ok_or_else(stopped))
            .collect::<Result<Vec<_>>>()
    }

    /// Asks the engine thread to abort everything and stop.
    pub fn shutdown(&self) {
        let _ = self.tx.send(Command::Shutdown);
    }
}

/// A request in flight: where its result goes.
struct Live {
    call: usize,
    index: usize,
    ticket: Ticket,
    progress: usize,
}

/// A call in flight: its reply channel and its figures for the current step.
struct CallState {
    reply: Sender<Event>,
    left: usize,
    sampled: usize,
    finished: usize,
}

/// Runs `engine` on `inbox`'s submissions until every handle is dropped (after the work in flight
/// is done) or a shutdown is asked for (aborting what is in flight).
pub fn serve<R: ModelRunner>(mut engine: Engine<R>, inbox: Inbox) {
    let mut live: HashMap<RequestId, Live> = HashMap::new();
    let mut calls: HashMap<usize, CallState> = HashMap::new();
    let mut next_call = 0usize;
    let mut window = (Instant::now(), 0u64);
    let gauges = inbox.gauges.clone();
    let mut open = true;
    loop {
        // Take what has arrived; block only when there is nothing to step.
        let mut cmds = Vec::new();
        if open && !engine.has_unfinished() {
            match inbox.rx.recv() {
                Ok(c) => cmds.push(c),
                Err(_) => open = false,
            }
        }
        while let Ok(c) = inbox.rx.try_recv() {
            cmds.push(c);
        }
        for cmd in cmds {
            match cmd {
                Command::Submit {
                    owner,
                    ticket,
                    reqs,
                    reply,
                } => {
                    let call = next_call;
                    next_call += 1;
                    let mut state = CallState {
                        reply,
                        left: reqs.len(),
                        sampled: 0,
                        finished: 0,
                    };
                    for (index, req) in reqs.into_iter().enumerate() {
                        match engine.submit_as(owner, req) {
                            Ok(id) => {
                                live.insert(
                                    id,
                                    Live {
                                        call,
                                        index,
                                        ticket: ticket.clone(),
                                        progress: 0,
                                    },
                                );
                            }
                            Err(e) => {
                                state.left -= 1;
                                let _ = state.reply.send(Event::Done(index, Err(e)));
                            }
                        }
                    }
                    if state.left > 0 {
                        calls.insert(call, state);
                    }
                }
                Command::AbortOwner(owner) => {
                    engine.abort_owner(owner, "another request of the auction failed");
                }
                Command::Shutdown => {
                    let ids: Vec<RequestId> = live.keys().copied().collect();
                    for id in ids {
                        engine.abort(id, "the server is shutting down");
                    }
                    open = false;
                }
            }
        }
        // Cancelled and expired work leaves before the step.
        for (&id, l) in &live {
            if let Some(reason) = l.ticket.stopped() {
                engine.abort(id, reason);
            }
        }
        let stats = if engine.has_unfinished() {
            let s = engine.step();
            gauges.record(&s, engine.running_seqs(), engine.waiting_len());
            window.1 += s.tokens as u64;
            let dt = window.0.elapsed();
            if dt >= Duration::from_secs(1) {
                let rate = window.1 as f64 / dt.as_secs_f64();
                gauges.tokens_per_s.store(rate.to_bits(), Ordering::Relaxed);
                window = (Instant::now(), 0);
            }
            Some(s)
        } else {
            gauges.record(&StepStats::default(), 0, 0);
            None
        };
        deliver(&mut engine, &mut live, &mut calls, stats);
        if !open && live.is_empty() {
            break;
        }
    }
}

/// Sends each advanced call its step, then finished requests their results (in this order, so a
/// call sees its last step before it returns).
fn deliver<R: ModelRunner>(
    engine: &mut Engine<R>,
    live: &mut HashMap<RequestId, Live>,
    calls: &mut HashMap<usize, CallState>,
    stats: Option<StepStats>,
) {
    let mut done = Vec::new();
    for (&id, l) in live.iter_mut() {
        let Some(call) = calls.get_mut(&l.call) else {
            continue;
        };
        if let Some(out) = engine.take_outcome(id) {
            if let Ok(o) = &out {
                call.sampled += progress_of(o).saturating_sub(l.progress);
            }
            call.finished += 1;
            done.push((id, out));
        } else if let Some(p) = engine.progress(id) {
            call.sampled += p.saturating_sub(l.progress);
            l.progress = p;
        }
    }
    let base = stats.unwrap_or_default();
    for c in calls.values_mut() {
        if c.sampled > 0 || c.finished > 0 {
            let _ = c.reply.send(Event::Step(StepStats {
                sampled: c.sampled,
                finished: c.finished,
                ..base
            }));
            c.sampled = 0;
            c.finished = 0;
        }
    }
    for (id, out) in done {
        if let Some(l) = live.remove(&id)
            && let Some(call) = calls.get_mut(&l.call)
        {
            call.left -= 1;
            let _ = call.reply.send(Event::Done(l.index, out));
        }
    }
    calls.retain(|_, c| c.left > 0);
}

/// Tokens a finished request produced (as [`Engine::progress`] counts them).
fn progress_of(o: &Outcome) -> usize {
    match o {
        Outcome::Generated(g) => g.tokens.len(),
        Outcome::Scored(s) => s.token_logprobs.len(),
        Outcome::Joint(j) => j.tokens.len(),
    }
}

/// A served engine's thread: the handle and the join handle (joined on drop after a shutdown).
pub struct EngineThread {
    handle: EngineHandle,
    join: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl EngineThread {
    /// Starts a thread that builds an engine with `make` (in the thread, so the engine may borrow
    /// what `make` owns) and serves it.
    ///
    /// # Errors
    /// `make`'s error, or a thread that could not start.
    pub fn start<F>(name: &str, make: F) -> Result<Self>
    where
        F: FnOnce(Inbox, &dyn Fn(Result<()>)) + Send + 'static,
    {
        let (handle, inbox) = channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let join = std::thread::Builder::new()
            .name(format!("engine {name}"))
            .spawn(move || {
                let ready = move |r: Result<()>| {
                    let _ = ready_tx.send(r);
                };
                make(inbox, &ready);
            })
            .map_err(|e| EngineError::Internal(format!("cannot start the engine thread: {e}")))?;
        ready_rx.recv().map_err(|_| stopped())??;
        Ok(Self {
            handle,
            join: Mutex::new(Some(join)),
        })
    }

    /// The handle.
    pub fn handle(&self) -> &EngineHandle {
        &self.handle
    }
}

impl Drop for EngineThread {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(j) = self.join.get_mut().ok().and_then(Option::take) {
            let _ = j.join();
        }
    }
}
