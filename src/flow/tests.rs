use super::*;

fn limits(high: usize, low: usize) -> WriteBufferLimits {
    WriteBufferLimits::new(Some(high), Some(low)).unwrap()
}

fn drain(fc: &mut FlowControl) -> Vec<FlowEdge> {
    std::iter::from_fn(|| fc.poll_edge()).take(8).collect()
}

#[test]
fn pause_strictly_above_high_not_at_high() {
    // spec §3.5 (H): high=4, 4 bytes buffered → no pause; 5 → pause.
    let mut fc = FlowControl::new(limits(4, 1));
    fc.check(4);
    assert!(!fc.is_paused());
    assert_eq!(fc.poll_edge(), None);
    fc.check(5);
    assert!(fc.is_paused());
    assert_eq!(drain(&mut fc), [FlowEdge::Pause]);
}

#[test]
fn resume_at_low_not_before() {
    // spec §3.6: equality with low resumes.
    let mut fc = FlowControl::new(limits(8, 3));
    fc.check(9);
    assert_eq!(drain(&mut fc), [FlowEdge::Pause]);
    fc.check(4);
    assert!(fc.is_paused());
    assert_eq!(fc.poll_edge(), None);
    fc.check(3);
    assert!(!fc.is_paused());
    assert_eq!(drain(&mut fc), [FlowEdge::Resume]);
}

#[test]
fn at_most_one_pause_per_episode() {
    // spec §3.7: further writes while paused do not pause again.
    let mut fc = FlowControl::new(limits(4, 1));
    for size in 5..20 {
        fc.check(size);
    }
    assert_eq!(drain(&mut fc), [FlowEdge::Pause]);
    fc.check(30);
    assert_eq!(fc.poll_edge(), None);
}

#[test]
fn undelivered_episode_gives_pause_then_resume() {
    // DESIGN.md §4: never one without the other.
    let mut fc = FlowControl::new(limits(4, 1));
    fc.check(5);
    fc.check(0);
    assert!(!fc.is_paused());
    assert_eq!(drain(&mut fc), [FlowEdge::Pause, FlowEdge::Resume]);
}

#[test]
fn high_zero_pauses_while_anything_is_buffered() {
    // anyio#1294 relies on high=0: pause on any byte, resume only when empty.
    let mut fc = FlowControl::new(WriteBufferLimits::new(Some(0), None).unwrap());
    fc.check(1);
    assert!(fc.is_paused());
    fc.check(1);
    assert!(fc.is_paused());
    fc.check(0);
    assert!(!fc.is_paused());
}

#[test]
fn set_limits_rechecks_both_edges() {
    // asyncio#140: lowering high below the size pauses at once; DESIGN.md §5: raising the
    // limits above the size resumes at once (asyncio waits for the next flush).
    let mut fc = FlowControl::new(WriteBufferLimits::default());
    fc.check(512);
    fc.set_limits(limits(256, 128), 512);
    assert!(fc.is_paused());
    assert_eq!(drain(&mut fc), [FlowEdge::Pause]);
    fc.set_limits(limits(2048, 512), 512);
    assert!(!fc.is_paused());
    assert_eq!(drain(&mut fc), [FlowEdge::Resume]);
}

#[test]
fn external_pending_counts_toward_size() {
    let mut fc = FlowControl::new(limits(10, 2));
    fc.set_external_pending(8, 3);
    assert_eq!(fc.size(3), 11);
    assert!(fc.is_paused());
    fc.set_external_pending(0, 3);
    assert!(fc.is_paused());
    fc.set_external_pending(0, 2);
    assert!(!fc.is_paused());
    assert_eq!(drain(&mut fc), [FlowEdge::Pause, FlowEdge::Resume]);
}

#[test]
fn freeze_stops_new_edges_but_delivers_those_that_happened() {
    // spec §3.10: abort delivers pause_writing → connection_lost, never resume_writing.
    let mut fc = FlowControl::new(limits(4, 1));
    fc.check(5);
    fc.freeze();
    fc.check(0);
    assert!(fc.is_paused());
    assert_eq!(drain(&mut fc), [FlowEdge::Pause]);

    let mut fc = FlowControl::new(limits(4, 1));
    fc.check(5);
    assert_eq!(drain(&mut fc), [FlowEdge::Pause]);
    fc.freeze();
    fc.check(0);
    assert_eq!(fc.poll_edge(), None);

    // A resume that happened before (a close flush drained) is still owed.
    let mut fc = FlowControl::new(limits(4, 1));
    fc.check(5);
    assert_eq!(drain(&mut fc), [FlowEdge::Pause]);
    fc.check(0);
    fc.freeze();
    assert_eq!(drain(&mut fc), [FlowEdge::Resume]);
}

#[test]
fn hard_limit_refuses_whole_writes() {
    let mut fc = FlowControl::new(WriteBufferLimits::default());
    assert_eq!(fc.admit(1 << 40, 1 << 40), Ok(()));
    fc.set_hard_limit(Some(10));
    assert_eq!(fc.admit(4, 6), Ok(()));
    assert_eq!(fc.admit(4, 7), Err(WriteError::BufferFull { buffered: 4, len: 7, limit: 10 }));
    fc.set_external_pending(5, 4);
    assert_eq!(fc.admit(0, 6), Err(WriteError::BufferFull { buffered: 5, len: 6, limit: 10 }));
}

/// Every sequence of up to 6 operations (a size change in 0..=6, or delivering one edge,
/// or freezing) for every limit pair with high <= 4: the delivered edges alternate starting
/// with a pause, `is_paused` equals an independent model of the `> high` / `<= low` rule,
/// and after delivering everything the view agrees with the state — with a pause and a
/// resume delivered whenever an episode started since the previous delivery.
#[test]
fn exhaustive_small_range() {
    #[derive(Clone, Copy, Debug)]
    enum Op {
        Size(usize),
        Deliver,
        Freeze,
    }
    let ops: Vec<Op> = (0..=6).map(Op::Size).chain([Op::Deliver, Op::Freeze]).collect();
    let mut cases = 0u64;
    for high in 0..=4 {
        for low in 0..=high {
            let mut seq = Vec::new();
            walk(limits(high, low), &ops, &mut seq, &mut cases);
        }
    }
    assert!(cases > 100_000, "only {cases} cases");

    fn walk(l: WriteBufferLimits, ops: &[Op], seq: &mut Vec<Op>, cases: &mut u64) {
        check_sequence(l, seq);
        *cases += 1;
        if seq.len() == 6 {
            return;
        }
        for &op in ops {
            seq.push(op);
            walk(l, ops, seq, cases);
            seq.pop();
        }
    }

    fn check_sequence(l: WriteBufferLimits, seq: &[Op]) {
        let mut fc = FlowControl::new(l);
        let mut model_paused = false;
        let mut frozen = false;
        let mut delivered: Vec<FlowEdge> = Vec::new();
        // A pause transition happened that no delivered pause has reported yet.
        let mut pause_unseen = false;
        let deliver = |fc: &mut FlowControl, delivered: &mut Vec<FlowEdge>, unseen: &mut bool| {
            if let Some(e) = fc.poll_edge() {
                if e == FlowEdge::Pause {
                    *unseen = false;
                }
                delivered.push(e);
            }
        };
        for &op in seq {
            match op {
                Op::Size(s) => {
                    if !frozen {
                        if !model_paused && s > l.high() {
                            model_paused = true;
                            // Only a protocol that believes it may write must hear it.
                            pause_unseen |= delivered.last() != Some(&FlowEdge::Pause);
                        } else if model_paused && s <= l.low() {
                            model_paused = false;
                        }
                    }
                    fc.check(s);
                }
                Op::Deliver => deliver(&mut fc, &mut delivered, &mut pause_unseen),
                Op::Freeze => {
                    frozen = true;
                    fc.freeze();
                }
            }
            assert_eq!(fc.is_paused(), model_paused, "{l:?} {seq:?}");
        }
        let before = delivered.len();
        let unseen_before = pause_unseen;
        for _ in 0..4 {
            deliver(&mut fc, &mut delivered, &mut pause_unseen);
        }
        assert_eq!(fc.poll_edge(), None, "{l:?} {seq:?}");
        // Strict alternation, starting with a pause.
        for (i, e) in delivered.iter().enumerate() {
            let want = if i % 2 == 0 { FlowEdge::Pause } else { FlowEdge::Resume };
            assert_eq!(*e, want, "{l:?} {seq:?} {delivered:?}");
        }
        let view = delivered.last() == Some(&FlowEdge::Pause);
        // Frozen or not, the view ends equal to the state, which freezing stopped moving.
        assert_eq!(view, model_paused, "{l:?} {seq:?} {delivered:?} frozen={frozen}");
        if unseen_before {
            assert!(
                delivered[before..].first() == Some(&FlowEdge::Pause),
                "a pause that happened was not delivered: {l:?} {seq:?} {delivered:?}"
            );
        }
    }
}

#[test]
fn held_edges_hand_back_only_the_difference() {
    // spec §10.53: a sendfile fallback takes the edges of its own writes; the protocol
    // then hears only how the state differs from what it was told.
    let mut fc = FlowControl::new(limits(4, 1));
    fc.hold();
    for _ in 0..3 {
        fc.check(9);
        fc.check(0);
    }
    assert!(!fc.has_edge());
    assert_eq!(drain(&mut fc), []);
    fc.check(9);
    fc.release();
    assert_eq!(drain(&mut fc), [FlowEdge::Pause], "paused now, not before: one pause");

    // A protocol paused before the hold gets its resume once the buffer drained.
    fc.hold();
    fc.check(0);
    fc.check(9);
    fc.check(0);
    fc.release();
    assert_eq!(drain(&mut fc), [FlowEdge::Resume]);

    // An episode owed before the hold is still owed after it.
    fc.check(9);
    fc.check(0);
    fc.hold();
    assert_eq!(drain(&mut fc), []);
    fc.release();
    assert_eq!(drain(&mut fc), [FlowEdge::Pause, FlowEdge::Resume]);
}
