//! The scheduler state machine: the longest-first queue, guided
//! self-scheduling batches, leases with fencing tokens, retries and requeues.
//!
//! Every input is a method call carrying `now` (a monotonic offset from the
//! start of the run); nothing here blocks, sleeps, reads a clock or does I/O.
//! See `docs/design/scheduler.md` for why it works the way it does.

use crate::ids::{ExecId, LeaseId, SlotId};
use crate::plan::{PlannedTest, SchedConfig, SchedError};
use shoal_core::{FinalStatus, Outcome, RunCounts, TestCase, TestId};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Duration;

/// One execution handed out in a lease: which test, which repetition, which
/// attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Execution {
    pub exec: ExecId,
    pub case: TestCase,
    /// 1 for the first attempt, 2 for the first retry, ... A requeued
    /// execution (its lease ended before it ran) keeps its attempt number.
    pub attempt: u32,
    /// Which repetition (0-based) of `--repeat N`.
    pub repeat: u32,
    pub estimate: Duration,
}

/// A batch leased to one slot: tests of one suite, no test twice.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub id: LeaseId,
    /// Fencing token: results and renewals must quote it.
    pub token: u64,
    pub slot: SlotId,
    /// In the order they should run (longest first).
    pub items: Vec<Execution>,
    /// Sum of the items' estimates.
    pub estimate: Duration,
    /// When the lease expires unless renewed or reported on (`None`: never).
    pub deadline: Option<Duration>,
}

impl Lease {
    /// The suite every item belongs to.
    pub fn suite(&self) -> &str {
        self.items.first().map_or("", |e| e.case.id.suite.as_str())
    }
}

/// What the scheduler made of a result, a release or an expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Ignored: the lease is no longer live (released, expired, cancelled),
    /// its token is wrong, or the execution was already reported in it.
    /// Nothing was recorded.
    Stale,
    /// A failure with attempts left: the next attempt has been queued.
    Retry,
    /// The execution is over. An execution whose lease ended before it ran,
    /// more than `max_requeues` times, is `Final(Failed)` with outcome
    /// [`Outcome::Lost`]; those are what [`Scheduler::release`] and
    /// [`Scheduler::expire`] return.
    Final(FinalStatus),
}

impl Decision {
    pub fn final_status(self) -> Option<FinalStatus> {
        match self {
            Decision::Final(s) => Some(s),
            Decision::Stale | Decision::Retry => None,
        }
    }

    pub fn will_retry(self) -> bool {
        self == Decision::Retry
    }
}

/// A lease that [`Scheduler::expire`] ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Expired {
    pub lease: LeaseId,
    pub slot: SlotId,
    /// Executions that this made final (lost); the others were requeued.
    pub lost: Vec<(Execution, Decision)>,
}

/// A renewal quoted a lease that is no longer live: the holder should stop
/// its batch, since the work has been given to someone else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("lease {0} is no longer live")]
pub struct StaleLease(pub LeaseId);

#[derive(Debug)]
struct TestInfo {
    case: TestCase,
    /// Nanoseconds.
    estimate: u64,
    /// Nanoseconds of its group's work, by which suites' queue heads
    /// compete (its own estimate when it has no locality).
    priority: u64,
    retries: u32,
    max_batch: usize,
    /// Index into `Scheduler::main`.
    suite: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Queued,
    /// Item `pos` of a live lease, awaiting its result.
    Leased {
        lease: LeaseId,
        pos: u32,
    },
    Done,
    Cancelled,
}

#[derive(Debug)]
struct ExecState {
    test: u32,
    repeat: u32,
    attempt: u32,
    failures: u32,
    requeues: u32,
    /// Run alone: its last attempt crashed or timed out, which can take
    /// the rest of a batch down with it.
    isolate: bool,
    phase: Phase,
    /// Distinct slots an attempt failed on, to place the next one elsewhere.
    failed_on: Vec<SlotId>,
}

impl ExecState {
    /// Requeued at least once: a lease holding it ended before it reported
    /// (its worker died, perhaps by its hand).
    fn suspect(&self) -> bool {
        self.requeues > 0
    }

    /// Leased in a batch of its own: a crash or timeout of it, or a lost
    /// worker, must be pinned on it and take no batch-mates along.
    fn alone(&self) -> bool {
        self.isolate || self.suspect()
    }
}

#[derive(Debug)]
struct LeaseItem {
    exec: ExecId,
    pending: bool,
}

#[derive(Debug)]
struct LeaseState {
    token: u64,
    slot: SlotId,
    items: Vec<LeaseItem>,
    deadline: Option<Duration>,
}

/// First attempts of one test not leased yet: repetitions `next..repeat`.
#[derive(Debug, Clone, Copy)]
struct Entry {
    test: u32,
    next: u32,
}

/// Where a batch starts.
#[derive(Debug, Clone, Copy)]
enum Head {
    /// Position in the front queue, and how much the item avoids the slot.
    Front(usize, u8),
    /// A suite's longest-first queue.
    Main(usize),
}

/// The scheduler for one run. See the crate docs for the protocol.
#[derive(Debug)]
pub struct Scheduler {
    cfg: SchedConfig,
    repeat: u32,
    /// Sorted longest-first; a test's index is its rank.
    tests: Vec<TestInfo>,
    /// Execution `t * repeat + r` is repetition `r` of test `t`.
    execs: Vec<ExecState>,
    /// Per suite, first attempts in longest-first order (one entry per test).
    main: Vec<VecDeque<Entry>>,
    /// Per suite: the least estimated work a batch is filled to (twice the
    /// suite's batch overhead), nanoseconds.
    min_batch_work: Vec<u64>,
    /// Retries and requeued executions, oldest first; served before `main`.
    front: VecDeque<ExecId>,
    leases: BTreeMap<LeaseId, LeaseState>,
    slots: HashSet<SlotId>,
    /// Live slots per worker.
    workers: HashMap<u32, u32>,
    next_lease: u64,
    queued: usize,
    queued_work: u64,
    in_flight: usize,
    in_flight_work: u64,
    done: usize,
    cancelled: usize,
    lost: usize,
    /// Executions with at least one failed attempt.
    failed_attempts: usize,
    counts: RunCounts,
    /// `stamp[test] == batch_seq` while a batch being built holds the test.
    stamp: Vec<u64>,
    batch_seq: u64,
}

/// Fisher-Yates with splitmix64: small, seeded, and the same on every
/// platform and release (a seed printed by one run replays on another).
fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    for i in (1..items.len()).rev() {
        // Multiply-shift: unbiased enough for ordering tests.
        let j = ((u128::from(next()) * (i as u128 + 1)) >> 64) as usize;
        items.swap(i, j);
    }
}

/// The queue order without a shuffle: groups of one suite and locality
/// (a test without one is a group of its own) longest-first by summed
/// estimate, ties by the first test's id; within a group, the given order
/// (collection order, which keeps fixtures set up once per group). Sets each
/// test's `priority` to its group's work.
fn longest_first_by_locality(tests: &[PlannedTest], priority: &mut [u64]) -> Vec<usize> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut index: HashMap<(&str, &str), usize> = HashMap::new();
    for (i, t) in tests.iter().enumerate() {
        match &t.locality {
            Some(l) => {
                let g = *index
                    .entry((t.case.id.suite.as_str(), l.as_str()))
                    .or_insert_with(|| {
                        groups.push(Vec::new());
                        groups.len() - 1
                    });
                groups[g].push(i);
            }
            None => groups.push(vec![i]),
        }
    }
    let work: Vec<u64> = groups
        .iter()
        .map(|g| {
            g.iter()
                .fold(0u64, |w, &i| w.saturating_add(nanos(tests[i].estimate)))
        })
        .collect();
    let mut by_work: Vec<usize> = (0..groups.len()).collect();
    by_work.sort_unstable_by(|&a, &b| {
        work[b].cmp(&work[a]).then_with(|| {
            tests[groups[a][0]]
                .case
                .id
                .cmp(&tests[groups[b][0]].case.id)
        })
    });
    let mut order = Vec::with_capacity(tests.len());
    for g in by_work {
        for &i in &groups[g] {
            priority[i] = work[g];
            order.push(i);
        }
    }
    order
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Scheduler {
    /// Plans `repeat` executions of every test over `slots` (more can join
    /// with [`add_slot`](Self::add_slot) or simply by asking for work).
    pub fn new(
        cfg: SchedConfig,
        tests: Vec<PlannedTest>,
        repeat: u32,
        slots: &[SlotId],
    ) -> Result<Self, SchedError> {
        if repeat == 0 {
            return Err(SchedError::ZeroRepeat);
        }
        let mut seen = HashSet::with_capacity(tests.len());
        for t in &tests {
            if !seen.insert(&t.case.id) {
                return Err(SchedError::DuplicateTest(t.case.id.clone()));
            }
        }
        let too_many = SchedError::TooManyExecutions {
            tests: tests.len(),
            repeat,
        };
        let n_exec = tests
            .len()
            .checked_mul(repeat as usize)
            .filter(|&n| n <= u32::MAX as usize)
            .ok_or(too_many)?;

        // Sort a permutation, not the (large) tests themselves.
        let mut order: Vec<usize> = (0..tests.len()).collect();
        // What a test's place among the other groups' is judged by.
        let mut priority: Vec<u64> = tests.iter().map(|t| nanos(t.estimate)).collect();
        match cfg.shuffle {
            _ if cfg.keep_order => {}
            None => order = longest_first_by_locality(&tests, &mut priority),
            Some(seed) => {
                // From the tests' ids, not the order they came in, so that
                // a seed names one order of a given set of tests.
                order.sort_unstable_by(|&a, &b| tests[a].case.id.cmp(&tests[b].case.id));
                shuffle(&mut order, seed);
            }
        }
        let mut tests: Vec<Option<PlannedTest>> = tests.into_iter().map(Some).collect();
        let tests = order
            .into_iter()
            .filter_map(|i| tests[i].take().map(|t| (i, t)));
        let mut suite_index: HashMap<String, usize> = HashMap::new();
        let mut main: Vec<VecDeque<Entry>> = Vec::new();
        let mut min_batch_work: Vec<u64> = Vec::new();
        let mut infos = Vec::with_capacity(n_exec / repeat as usize);
        let mut execs = Vec::with_capacity(n_exec);
        let mut queued_work = 0u64;
        for (rank, (i, t)) in tests.enumerate() {
            let test = rank as u32;
            let suite = match suite_index.get(&t.case.id.suite) {
                Some(&i) => i,
                None => {
                    main.push(VecDeque::new());
                    min_batch_work.push(0);
                    suite_index.insert(t.case.id.suite.clone(), main.len() - 1);
                    main.len() - 1
                }
            };
            min_batch_work[suite] =
                min_batch_work[suite].max(nanos(t.batch_overhead).saturating_mul(2));
            main[suite].push_back(Entry { test, next: 0 });
            let estimate = nanos(t.estimate);
            queued_work = queued_work.saturating_add(estimate.saturating_mul(u64::from(repeat)));
            execs.extend((0..repeat).map(|r| ExecState {
                test,
                repeat: r,
                attempt: 1,
                failures: 0,
                requeues: 0,
                isolate: false,
                phase: Phase::Queued,
                failed_on: Vec::new(),
            }));
            infos.push(TestInfo {
                priority: priority[i],
                case: t.case,
                estimate,
                retries: t.retries,
                max_batch: t.max_batch.max(1),
                suite,
            });
        }

        let mut sched = Self {
            cfg,
            repeat,
            stamp: vec![0; infos.len()],
            tests: infos,
            execs,
            main,
            min_batch_work,
            front: VecDeque::new(),
            leases: BTreeMap::new(),
            slots: HashSet::new(),
            workers: HashMap::new(),
            next_lease: 0,
            queued: n_exec,
            queued_work,
            in_flight: 0,
            in_flight_work: 0,
            done: 0,
            cancelled: 0,
            lost: 0,
            failed_attempts: 0,
            counts: RunCounts::default(),
            batch_seq: 0,
        };
        for &s in slots {
            sched.add_slot(s);
        }
        Ok(sched)
    }

    // ----- slots -----

    /// Registers a live slot; returns whether it was new. A slot that asks
    /// for work is registered implicitly. The number of live slots sizes
    /// batches and tells whether a retry can avoid a slot at all.
    pub fn add_slot(&mut self, slot: SlotId) -> bool {
        let new = self.slots.insert(slot);
        if new {
            *self.workers.entry(slot.worker).or_default() += 1;
        }
        new
    }

    /// Forgets a slot (its worker left or died) and releases its leases;
    /// returns the executions that this made final (lost).
    pub fn remove_slot(&mut self, slot: SlotId) -> Vec<(Execution, Decision)> {
        if self.slots.remove(&slot) {
            if let Some(n) = self.workers.get_mut(&slot.worker) {
                *n -= 1;
                if *n == 0 {
                    self.workers.remove(&slot.worker);
                }
            }
        }
        let held: Vec<LeaseId> = self
            .leases
            .iter()
            .filter(|(_, l)| l.slot == slot)
            .map(|(&id, _)| id)
            .collect();
        let mut lost = Vec::new();
        for id in held {
            if let Some(l) = self.leases.remove(&id) {
                lost.extend(self.requeue_unreported(l));
            }
        }
        lost
    }

    pub fn live_slots(&self) -> usize {
        self.slots.len()
    }

    // ----- leasing -----

    /// A slot asks for work. Returns a batch, or `None` when nothing is
    /// queued right now (everything left is leased; retries or requeues may
    /// still appear: ask again after the next report or release, until
    /// [`is_finished`](Self::is_finished)).
    ///
    /// The batch starts at the first retry or requeued execution that does
    /// not avoid this slot, else at the longest queued test, and takes more
    /// tests of the same suite, in order, while their summed estimate stays
    /// within `max(queued work / (2 × live slots), 2 × the suite's batch
    /// overhead)` and their number within `max_batch`.
    pub fn lease(&mut self, slot: SlotId, now: Duration) -> Option<Lease> {
        self.add_slot(slot);
        if self.queued == 0 {
            return None;
        }
        let head = self.pick_head(slot)?;
        self.next_lease += 1;
        let id = LeaseId(self.next_lease);
        self.batch_seq += 1;
        let target = self.queued_work / (2 * self.slots.len() as u64);
        let mut b = Batch {
            id,
            items: Vec::new(),
            work: 0,
            cap: usize::MAX,
            target,
        };

        let fill_suite = match head {
            Head::Front(i, level) => {
                let first = self.front[i];
                let suite = self.tests[self.test_of(first)].suite;
                b.cap = self.tests[self.test_of(first)].max_batch;
                b.target = b.target.max(self.min_batch_work[suite]);
                self.take(&mut b, first);
                let isolated = self.execs[first.idx()].alone();
                if !isolated {
                    for j in i + 1..self.front.len() {
                        let e = self.front[j];
                        let st = &self.execs[e.idx()];
                        let t = &self.tests[st.test as usize];
                        if st.alone()
                            || t.suite != suite
                            || self.stamp[st.test as usize] == self.batch_seq
                            || self.avoid_level(st, slot) > level
                        {
                            continue;
                        }
                        if !b.fits(t) {
                            break;
                        }
                        self.take(&mut b, e);
                    }
                }
                if b.items.len() == 1 {
                    self.front.remove(i);
                } else {
                    let execs = &self.execs;
                    self.front.retain(|e| execs[e.idx()].phase == Phase::Queued);
                }
                (!isolated).then_some(suite)
            }
            Head::Main(s) => Some(s),
        };
        if let Some(s) = fill_suite {
            b.target = b.target.max(self.min_batch_work[s]);
            self.fill_from_main(&mut b, s);
        }

        let token = self.cfg.token_base.wrapping_add(id.0);
        Some(self.open_lease(id, token, slot, &b.items, b.work, now))
    }

    /// Records a lease of `items` (already marked leased) and returns it.
    fn open_lease(
        &mut self,
        id: LeaseId,
        token: u64,
        slot: SlotId,
        items: &[ExecId],
        work: u64,
        now: Duration,
    ) -> Lease {
        let deadline = self.cfg.lease_timeout.map(|t| now + t);
        let state_items = items
            .iter()
            .map(|&exec| LeaseItem {
                exec,
                pending: true,
            })
            .collect();
        self.leases.insert(
            id,
            LeaseState {
                token,
                slot,
                items: state_items,
                deadline,
            },
        );
        Lease {
            id,
            token,
            slot,
            items: items.iter().map(|&e| self.execution(e)).collect(),
            estimate: Duration::from_nanos(work),
            deadline,
        }
    }

    fn test_of(&self, exec: ExecId) -> usize {
        self.execs[exec.idx()].test as usize
    }

    /// Where the next batch for `slot` starts: a retry or requeue that does
    /// not avoid it; else the longest queued first attempt; else, rather
    /// than leave the slot idle, the retry that avoids it least.
    ///
    /// A suspect (requeued: a lease ended before it reported) is skipped
    /// while another suspect is leased to a slot of the same worker: when
    /// that worker dies, only one of them can have killed it.
    fn pick_head(&self, slot: SlotId) -> Option<Head> {
        let mut fallback: Option<(usize, u8)> = None;
        let suspect_busy = self.suspect_leased_on(slot.worker);
        for (i, &e) in self.front.iter().enumerate() {
            let st = &self.execs[e.idx()];
            if suspect_busy && st.suspect() {
                continue;
            }
            let level = self.avoid_level(st, slot);
            if level == 0 {
                return Some(Head::Front(i, 0));
            }
            if fallback.is_none_or(|(_, l)| level < l) {
                fallback = Some((i, level));
            }
        }
        let best = (0..self.main.len())
            .filter_map(|s| {
                self.main[s]
                    .front()
                    .map(|e| (s, &self.tests[e.test as usize]))
            })
            .min_by(|(_, a), (_, b)| {
                b.priority
                    .cmp(&a.priority)
                    .then_with(|| a.case.id.cmp(&b.case.id))
            });
        if let Some((s, _)) = best {
            return Some(Head::Main(s));
        }
        fallback.map(|(i, l)| Head::Front(i, l))
    }

    /// Whether a slot of `worker` holds a lease on a suspect that has not
    /// reported yet.
    fn suspect_leased_on(&self, worker: u32) -> bool {
        self.leases.values().any(|l| {
            l.slot.worker == worker
                && l.items
                    .iter()
                    .any(|i| i.pending && self.execs[i.exec.idx()].suspect())
        })
    }

    /// How strongly `st`'s next attempt should stay off `slot`: 2 if it
    /// failed on this very slot, 1 if on another slot of the same worker,
    /// 0 otherwise, or when no live slot (worker) could do better.
    fn avoid_level(&self, st: &ExecState, slot: SlotId) -> u8 {
        if st.failed_on.is_empty() {
            return 0;
        }
        if st.failed_on.contains(&slot) {
            let live_failed = st
                .failed_on
                .iter()
                .filter(|s| self.slots.contains(s))
                .count();
            if live_failed < self.slots.len() {
                return 2;
            }
        }
        if st.failed_on.iter().any(|s| s.worker == slot.worker) {
            let mut failed_workers: Vec<u32> = st
                .failed_on
                .iter()
                .map(|s| s.worker)
                .filter(|w| self.workers.contains_key(w))
                .collect();
            failed_workers.sort_unstable();
            failed_workers.dedup();
            if failed_workers.len() < self.workers.len() {
                return 1;
            }
        }
        0
    }

    /// Adds first attempts of suite `s`, longest first, to the batch.
    fn fill_from_main(&mut self, b: &mut Batch, s: usize) {
        let mut put_back: Vec<Entry> = Vec::new();
        while let Some(&entry) = self.main[s].front() {
            let t = &self.tests[entry.test as usize];
            if self.stamp[entry.test as usize] == self.batch_seq {
                // A retry of this test is already in the batch.
                put_back.push(entry);
                self.main[s].pop_front();
                continue;
            }
            if b.items.is_empty() {
                b.cap = t.max_batch;
            } else if !b.fits(t) {
                break;
            }
            self.main[s].pop_front();
            let exec = ExecId(entry.test * self.repeat + entry.next);
            self.take(b, exec);
            if entry.next + 1 < self.repeat {
                // The next repetition waits for another batch.
                put_back.push(Entry {
                    test: entry.test,
                    next: entry.next + 1,
                });
            }
        }
        for e in put_back.into_iter().rev() {
            self.main[s].push_front(e);
        }
    }

    fn take(&mut self, b: &mut Batch, exec: ExecId) {
        let st = &mut self.execs[exec.idx()];
        debug_assert_eq!(st.phase, Phase::Queued);
        st.phase = Phase::Leased {
            lease: b.id,
            pos: b.items.len() as u32,
        };
        self.stamp[st.test as usize] = self.batch_seq;
        let est = self.tests[st.test as usize].estimate;
        b.work = b.work.saturating_add(est);
        b.items.push(exec);
        self.queued -= 1;
        self.queued_work = self.queued_work.saturating_sub(est);
        self.in_flight += 1;
        self.in_flight_work = self.in_flight_work.saturating_add(est);
    }

    fn execution(&self, exec: ExecId) -> Execution {
        let st = &self.execs[exec.idx()];
        let t = &self.tests[st.test as usize];
        Execution {
            exec,
            case: t.case.clone(),
            attempt: st.attempt,
            repeat: st.repeat,
            estimate: Duration::from_nanos(t.estimate),
        }
    }

    // ----- results -----

    /// The result of one execution of a live lease. Also renews the lease.
    ///
    /// Pass → `Passed` (or `Flaky` after failed attempts); skip → `Skipped`
    /// (or `Failed` after failed attempts: the failure is the last word);
    /// failure → `Retry` while attempts are left and the build does not look
    /// broken, else `Failed`.
    pub fn report(
        &mut self,
        lease: LeaseId,
        token: u64,
        exec: ExecId,
        outcome: Outcome,
        now: Duration,
    ) -> Decision {
        let Some(l) = self.leases.get_mut(&lease) else {
            return Decision::Stale;
        };
        if l.token != token {
            return Decision::Stale;
        }
        let Some(st) = self.execs.get(exec.idx()) else {
            return Decision::Stale;
        };
        let Phase::Leased {
            lease: held_by,
            pos,
        } = st.phase
        else {
            return Decision::Stale;
        };
        if held_by != lease {
            return Decision::Stale;
        }
        let item = &mut l.items[pos as usize];
        debug_assert!(item.pending && item.exec == exec);
        item.pending = false;
        let slot = l.slot;
        if let Some(t) = self.cfg.lease_timeout {
            l.deadline = Some(now + t);
        }

        let test = st.test as usize;
        let est = self.tests[test].estimate;
        self.in_flight -= 1;
        self.in_flight_work = self.in_flight_work.saturating_sub(est);
        self.counts.attempts += 1;

        let st = &mut self.execs[exec.idx()];
        let status = match outcome {
            Outcome::Pass if st.failures == 0 => FinalStatus::Passed,
            Outcome::Pass => FinalStatus::Flaky,
            Outcome::Skip if st.failures == 0 => FinalStatus::Skipped,
            Outcome::Skip => FinalStatus::Failed,
            Outcome::Fail | Outcome::Timeout | Outcome::Crash | Outcome::Lost => {
                st.failures += 1;
                self.failed_attempts += 1;
                let st = &self.execs[exec.idx()];
                if st.attempt <= self.tests[test].retries && !self.broken_build() {
                    let st = &mut self.execs[exec.idx()];
                    st.attempt += 1;
                    st.isolate = matches!(outcome, Outcome::Timeout | Outcome::Crash);
                    if !st.failed_on.contains(&slot) {
                        st.failed_on.push(slot);
                    }
                    self.enqueue_front(exec);
                    return Decision::Retry;
                }
                FinalStatus::Failed
            }
        };
        self.finish(exec, status);
        Decision::Final(status)
    }

    /// Ends a lease. Executions of it that got no result did not fail (their
    /// runner died first, or the batch was abandoned): they are requeued at
    /// the front with their attempt number unchanged, except those requeued
    /// more than `max_requeues` times already, which become final (failed,
    /// outcome lost) and are returned. A stale lease or token returns
    /// nothing.
    pub fn release(
        &mut self,
        lease: LeaseId,
        token: u64,
        _now: Duration,
    ) -> Vec<(Execution, Decision)> {
        match self.leases.get(&lease) {
            Some(l) if l.token == token => {}
            _ => return Vec::new(),
        }
        match self.leases.remove(&lease) {
            Some(l) => self.requeue_unreported(l),
            None => Vec::new(),
        }
    }

    /// Extends a live lease's deadline to `now + lease_timeout`; returns the
    /// new deadline (`None` when leases do not expire).
    pub fn renew(
        &mut self,
        lease: LeaseId,
        token: u64,
        now: Duration,
    ) -> Result<Option<Duration>, StaleLease> {
        match self.leases.get_mut(&lease) {
            Some(l) if l.token == token => {
                l.deadline = self.cfg.lease_timeout.map(|t| now + t);
                Ok(l.deadline)
            }
            _ => Err(StaleLease(lease)),
        }
    }

    /// Ends every lease whose deadline has passed (`deadline <= now`), as
    /// [`release`](Self::release) would. Later results quoting them are
    /// stale.
    pub fn expire(&mut self, now: Duration) -> Vec<Expired> {
        let due: Vec<LeaseId> = self
            .leases
            .iter()
            .filter(|(_, l)| l.deadline.is_some_and(|d| d <= now))
            .map(|(&id, _)| id)
            .collect();
        let mut out = Vec::with_capacity(due.len());
        for id in due {
            if let Some(l) = self.leases.remove(&id) {
                let slot = l.slot;
                let lost = self.requeue_unreported(l);
                out.push(Expired {
                    lease: id,
                    slot,
                    lost,
                });
            }
        }
        out
    }

    /// The earliest lease deadline: when [`expire`](Self::expire) next has
    /// something to do.
    pub fn next_deadline(&self) -> Option<Duration> {
        self.leases.values().filter_map(|l| l.deadline).min()
    }

    fn requeue_unreported(&mut self, l: LeaseState) -> Vec<(Execution, Decision)> {
        let mut lost = Vec::new();
        for item in l.items.iter().filter(|i| i.pending) {
            let exec = item.exec;
            let est = self.tests[self.test_of(exec)].estimate;
            self.in_flight -= 1;
            self.in_flight_work = self.in_flight_work.saturating_sub(est);
            let st = &mut self.execs[exec.idx()];
            st.requeues += 1;
            if st.requeues > self.cfg.max_requeues {
                st.failures += 1;
                self.failed_attempts += 1;
                self.counts.attempts += 1;
                self.lost += 1;
                let e = self.execution(exec);
                self.finish(exec, FinalStatus::Failed);
                lost.push((e, Decision::Final(FinalStatus::Failed)));
            } else {
                self.enqueue_front(exec);
            }
        }
        lost
    }

    fn enqueue_front(&mut self, exec: ExecId) {
        self.execs[exec.idx()].phase = Phase::Queued;
        self.front.push_back(exec);
        self.queued += 1;
        let est = self.tests[self.test_of(exec)].estimate;
        self.queued_work = self.queued_work.saturating_add(est);
    }

    fn finish(&mut self, exec: ExecId, status: FinalStatus) {
        self.execs[exec.idx()].phase = Phase::Done;
        self.done += 1;
        self.counts.add(status);
    }

    /// Stops the run: every execution not final yet is dropped (queued ones
    /// and those in live leases, whose later results are stale) and
    /// returned, in execution order.
    pub fn cancel_all(&mut self) -> Vec<Execution> {
        let open: Vec<ExecId> = (0..self.execs.len() as u32)
            .map(ExecId)
            .filter(|e| {
                matches!(
                    self.execs[e.idx()].phase,
                    Phase::Queued | Phase::Leased { .. }
                )
            })
            .collect();
        let out: Vec<Execution> = open.iter().map(|&e| self.execution(e)).collect();
        for e in open {
            self.execs[e.idx()].phase = Phase::Cancelled;
        }
        self.cancelled += out.len();
        self.main.iter_mut().for_each(VecDeque::clear);
        self.front.clear();
        self.leases.clear();
        self.queued = 0;
        self.queued_work = 0;
        self.in_flight = 0;
        self.in_flight_work = 0;
        out
    }

    // ----- resuming -----

    /// The execution of repetition `repeat` of test `id`.
    pub fn exec_id(&self, id: &TestId, repeat: u32) -> Option<ExecId> {
        let test = self.tests.iter().position(|t| &t.case.id == id)?;
        (repeat < self.repeat).then(|| ExecId(test as u32 * self.repeat + repeat))
    }

    /// Brings a freshly planned scheduler (same tests, estimates and
    /// repeat as the interrupted one, so the same [`ExecId`]s) up to what a
    /// store recorded before a coordinator restart: final executions are
    /// done, executions with failed attempts but no final status are queued
    /// for their next attempt. Call once, before the first lease; returns
    /// how many executions it restored.
    pub fn restore(&mut self, recorded: &[Restored]) -> usize {
        self.resume(recorded, &[], Duration::ZERO).0
    }

    /// [`restore`](Self::restore), then takes over the leases workers held
    /// when the coordinator stopped, with their old tokens (issued from an
    /// earlier token range, so they cannot collide with new ones) and a
    /// fresh deadline (`now + lease_timeout`): the workers' reports on them
    /// are accepted, not rerun. Items that are final already, or whose
    /// attempt differs from the recorded one, are left out; a lease with no
    /// item left is not adopted (`None`).
    pub fn resume(
        &mut self,
        recorded: &[Restored],
        adopted: &[Adopted],
        now: Duration,
    ) -> (usize, Vec<Option<Lease>>) {
        let n = self.restore_recorded(recorded);
        let leases = adopted.iter().map(|a| self.adopt(a, now)).collect();
        self.purge_main();
        (n, leases)
    }

    fn adopt(&mut self, a: &Adopted, now: Duration) -> Option<Lease> {
        let items: Vec<ExecId> = a
            .items
            .iter()
            .filter(|(exec, attempt)| {
                self.execs
                    .get(exec.idx())
                    .is_some_and(|st| st.phase == Phase::Queued && st.attempt == *attempt)
            })
            .map(|(exec, _)| *exec)
            .collect();
        if items.is_empty() {
            return None;
        }
        self.add_slot(a.slot);
        self.next_lease += 1;
        let id = LeaseId(self.next_lease);
        let mut work = 0u64;
        for (pos, &exec) in items.iter().enumerate() {
            let est = self.tests[self.test_of(exec)].estimate;
            work = work.saturating_add(est);
            self.execs[exec.idx()].phase = Phase::Leased {
                lease: id,
                pos: pos as u32,
            };
            self.queued -= 1;
            self.queued_work = self.queued_work.saturating_sub(est);
            self.in_flight += 1;
            self.in_flight_work = self.in_flight_work.saturating_add(est);
        }
        // Retries queued by the restore are leased now.
        let execs = &self.execs;
        self.front.retain(|e| execs[e.idx()].phase == Phase::Queued);
        Some(self.open_lease(id, a.token, a.slot, &items, work, now))
    }

    fn restore_recorded(&mut self, recorded: &[Restored]) -> usize {
        let mut n = 0;
        for r in recorded {
            let Some(st) = self.execs.get(r.exec.idx()) else {
                continue;
            };
            if st.phase != Phase::Queued || st.attempt != 1 || r.attempts == 0 {
                continue;
            }
            n += 1;
            let est = self.tests[st.test as usize].estimate;
            self.counts.attempts += r.attempts as usize;
            self.failed_attempts += r.failures as usize;
            let st = &mut self.execs[r.exec.idx()];
            st.failures = r.failures;
            match r.final_status {
                Some(status) => {
                    self.queued -= 1;
                    self.queued_work = self.queued_work.saturating_sub(est);
                    self.finish(r.exec, status);
                }
                None => {
                    st.attempt = r.attempts + 1;
                    self.front.push_back(r.exec);
                }
            }
        }
        n
    }

    /// First attempts still in the longest-first queues: drops what is
    /// done, leased or moved to the front; when that leaves gaps between a
    /// test's repetitions, its queued ones go to the front instead.
    fn purge_main(&mut self) {
        for s in 0..self.main.len() {
            let entries: Vec<Entry> = self.main[s].drain(..).collect();
            for e in entries {
                let fresh = |r: u32| {
                    let st = &self.execs[(e.test * self.repeat + r) as usize];
                    st.phase == Phase::Queued && st.attempt == 1
                };
                let reps: Vec<u32> = (e.next..self.repeat).filter(|&r| fresh(r)).collect();
                let Some(&first) = reps.first() else { continue };
                // An entry stands for repetitions `next..repeat`, all queued.
                let whole = reps.iter().copied().eq(first..self.repeat);
                if !whole {
                    for &r in &reps {
                        self.front.push_back(ExecId(e.test * self.repeat + r));
                    }
                    continue;
                }
                self.main[s].push_back(Entry {
                    test: e.test,
                    next: first,
                });
            }
        }
    }

    // ----- state -----

    /// Every execution is final or cancelled.
    pub fn is_finished(&self) -> bool {
        self.done + self.cancelled == self.execs.len()
    }

    /// More attempts have failed than `retry_threshold` × the planned
    /// executions (and more than `broken_build_floor`): failures are no
    /// longer retried. Retries queued before this stay queued.
    ///
    /// Failed attempts count, not failed executions: retries are served
    /// first, so in a broken build the first failures would otherwise use up
    /// all their retries before enough distinct tests had failed.
    pub fn broken_build(&self) -> bool {
        self.failed_attempts > self.cfg.broken_build_floor
            && self.failed_attempts as f64 > self.cfg.retry_threshold * self.execs.len() as f64
    }

    /// Tests × repeat.
    pub fn planned(&self) -> usize {
        self.execs.len()
    }

    /// Executions with a final status.
    pub fn finished(&self) -> usize {
        self.done
    }

    /// Executions waiting to be leased (first attempts, retries, requeues).
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Executions in live leases without a result yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Executions dropped by [`cancel_all`](Self::cancel_all).
    pub fn cancelled(&self) -> usize {
        self.cancelled
    }

    /// Executions that became final because they were requeued too often.
    pub fn lost(&self) -> usize {
        self.lost
    }

    /// Final statuses so far; `attempts` counts every result recorded.
    pub fn counts(&self) -> &RunCounts {
        &self.counts
    }

    /// Estimated work not done yet: queued plus leased without a result.
    /// Divide by the live slots for an ETA.
    pub fn remaining_estimate(&self) -> Duration {
        Duration::from_nanos(self.queued_work.saturating_add(self.in_flight_work))
    }

    /// Leases handed out and not yet released or expired.
    pub fn live_leases(&self) -> usize {
        self.leases.len()
    }
}

/// A lease a worker held when its coordinator stopped, for
/// [`Scheduler::resume`]: its slot, token, and (execution, attempt) items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adopted {
    pub slot: SlotId,
    pub token: u64,
    pub items: Vec<(ExecId, u32)>,
}

/// One execution as a store recorded it, for [`Scheduler::restore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub exec: ExecId,
    /// Attempts recorded (at least 1).
    pub attempts: u32,
    /// Of those, the failed ones (fail, timeout, crash, lost).
    pub failures: u32,
    /// Set when the last recorded attempt was final.
    pub final_status: Option<FinalStatus>,
}

/// A batch being built.
struct Batch {
    id: LeaseId,
    items: Vec<ExecId>,
    work: u64,
    cap: usize,
    target: u64,
}

impl Batch {
    /// Whether `t` may join a non-empty batch.
    fn fits(&self, t: &TestInfo) -> bool {
        self.items.len() < self.cap.min(t.max_batch)
            && self.work.saturating_add(t.estimate) <= self.target
    }
}

#[cfg(test)]
mod tests;
