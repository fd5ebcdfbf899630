use super::*;
use watcher::Event::{Apply, Delete, Init, InitApply, InitDone};

/// A stand-in object: (name, value). A negative value is one the derive function
/// cannot use.
type Obj = (&'static str, i32);

/// A watcher's output: `None` is a watch error.
type Events = Vec<Option<watcher::Event<Obj>>>;

/// What a snapshot holds, for comparing: (name, value) pairs and the ready latch.
type Seen = (Vec<(String, i32)>, bool);

fn reflector() -> Reflector<Obj, i32> {
    Reflector::new(|o| Some(o.0.to_owned()), |o, _| Some(o.1))
}

/// Keeps the last good value through a bad edit, as the policy adapter does.
fn keeping_last_good() -> Reflector<Obj, i32> {
    Reflector::new(
        |o| Some(o.0.to_owned()),
        |o, kept| {
            if o.1 < 0 { kept.copied() } else { Some(o.1) }
        },
    )
}

fn seen(snapshot: &Snapshot<i32>) -> Seen {
    let objects = snapshot
        .objects
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    (objects, snapshot.ready)
}

fn want(objects: &[Obj], ready: bool) -> Seen {
    let objects = objects.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect();
    (objects, ready)
}

/// Runs `events` through [`run`]; returns every published
/// snapshot.
async fn drive(reflector: Reflector<Obj, i32>, events: Events) -> Vec<Seen> {
    let events = events
        .into_iter()
        .map(|e| e.ok_or(watcher::Error::NoResourceVersion));
    let mut published = Vec::new();
    run(
        "test",
        futures_util::stream::iter(events),
        reflector,
        |snapshot| published.push(seen(snapshot)),
    )
    .await;
    published
}

#[tokio::test]
async fn the_snapshot_follows_the_writer_semantics() {
    let a1 = ("a", 1);
    let b2 = ("b", 2);
    let c3 = ("c", 3);
    let cases: Vec<(&str, Events, Vec<Seen>)> = vec![
        (
            "a list is seen whole, at InitDone, and sets the ready latch",
            vec![
                Some(Init),
                Some(InitApply(a1)),
                Some(InitApply(b2)),
                Some(InitDone),
            ],
            vec![want(&[a1, b2], true)],
        ),
        (
            "a list that has not finished is never published",
            vec![Some(Init), Some(InitApply(a1)), Some(InitApply(b2))],
            vec![],
        ),
        (
            "an empty list is a complete list: ready, with nothing",
            vec![Some(Init), Some(InitDone)],
            vec![want(&[], true)],
        ),
        (
            "Apply and Delete after the list change the live snapshot",
            vec![
                Some(Init),
                Some(InitApply(a1)),
                Some(InitDone),
                Some(Apply(b2)),
                Some(Apply(("a", 4))),
                Some(Delete(b2)),
            ],
            vec![
                want(&[a1], true),
                want(&[a1, b2], true),
                want(&[("a", 4), b2], true),
                want(&[("a", 4)], true),
            ],
        ),
        (
            "deleting what the snapshot does not hold publishes nothing",
            vec![Some(Init), Some(InitDone), Some(Delete(a1))],
            vec![want(&[], true)],
        ),
        (
            "a watch error keeps the last snapshot and the latch",
            vec![Some(Init), Some(InitApply(a1)), Some(InitDone), None, None],
            vec![want(&[a1], true)],
        ),
        (
            "an error before the first list leaves it unready",
            vec![None, Some(Init), Some(InitApply(a1)), None],
            vec![],
        ),
        (
            "a re-list that fails half way is dropped at the next Init",
            vec![
                Some(Init),
                Some(InitApply(a1)),
                Some(InitDone),
                Some(Init),
                Some(InitApply(b2)),
                None,
                Some(Init),
                Some(InitApply(c3)),
                Some(InitDone),
            ],
            vec![want(&[a1], true), want(&[c3], true)],
        ),
        (
            "a re-list replaces the snapshot: what was deleted meanwhile disappears",
            vec![
                Some(Init),
                Some(InitApply(a1)),
                Some(InitApply(b2)),
                Some(InitDone),
                None,
                Some(Init),
                Some(InitApply(("b", 5))),
                Some(InitDone),
            ],
            vec![want(&[a1, b2], true), want(&[("b", 5)], true)],
        ),
    ];
    for (name, events, published) in cases {
        assert_eq!(drive(reflector(), events).await, published, "{name}");
    }
}

#[test]
fn readers_see_nothing_of_a_list_until_it_is_done() {
    let mut r = reflector();
    for event in [Init, InitApply(("a", 1)), InitDone] {
        r.apply(event);
    }
    let before = r.snapshot().clone();
    // A re-list in progress: readers keep the old snapshot, ready, untouched.
    assert!(!r.apply(Init));
    assert!(!r.apply(InitApply(("b", 2))));
    assert!(Arc::ptr_eq(&before.objects, &r.snapshot().objects));
    assert_eq!(seen(r.snapshot()), want(&[("a", 1)], true));
    assert!(r.apply(InitDone));
    assert_eq!(seen(r.snapshot()), want(&[("b", 2)], true));
    // A snapshot a reader holds is its own: later changes do not reach into it.
    let held = r.snapshot().clone();
    r.apply(Apply(("c", 3)));
    assert_eq!(seen(&held), want(&[("b", 2)], true));
}

#[test]
fn a_ready_latch_is_never_cleared() {
    let mut r = reflector();
    assert!(!r.snapshot().ready, "ready before any list");
    r.apply(Apply(("a", 1)));
    assert!(!r.snapshot().ready, "an Apply is not a list");
    for event in [Init, InitDone, Init, InitApply(("b", 2))] {
        r.apply(event);
    }
    assert!(r.snapshot().ready, "a second Init cleared the latch");
    r.apply(Delete(("a", 1)));
    assert!(r.snapshot().ready);
}

#[tokio::test]
async fn the_derive_function_sees_the_live_value_and_can_keep_it() {
    let cases: Vec<(&str, Events, Seen)> = vec![
        (
            "a bad edit keeps the last good value",
            vec![
                Some(Init),
                Some(InitApply(("a", 1))),
                Some(InitDone),
                Some(Apply(("a", -1))),
            ],
            want(&[("a", 1)], true),
        ),
        (
            "a bad object in a re-list keeps the value readers had",
            vec![
                Some(Init),
                Some(InitApply(("a", 1))),
                Some(InitDone),
                Some(Init),
                Some(InitApply(("a", -1))),
                Some(InitDone),
            ],
            want(&[("a", 1)], true),
        ),
        (
            "a bad object never good is kept as nothing",
            vec![
                Some(Init),
                Some(InitApply(("a", -1))),
                Some(InitDone),
                Some(Apply(("b", -1))),
            ],
            want(&[], true),
        ),
        (
            "a good edit after a bad one replaces the kept value",
            vec![
                Some(Init),
                Some(InitApply(("a", 1))),
                Some(InitDone),
                Some(Apply(("a", -1))),
                Some(Apply(("a", 7))),
            ],
            want(&[("a", 7)], true),
        ),
    ];
    for (name, events, last) in cases {
        let published = drive(keeping_last_good(), events).await;
        assert_eq!(published.last(), Some(&last), "{name}");
    }
}

#[test]
fn an_object_without_a_key_is_ignored() {
    let mut r: Reflector<Obj, i32> = Reflector::new(
        |o| (!o.0.is_empty()).then(|| o.0.to_owned()),
        |o, _| Some(o.1),
    );
    for event in [Init, InitApply(("", 1)), InitDone] {
        r.apply(event);
    }
    assert!(!r.apply(Apply(("", 2))));
    assert!(!r.apply(Delete(("", 2))));
    assert_eq!(seen(r.snapshot()), want(&[], true));
}
