//! The k-way merge of per-node sorted streams: one head per source, the least head
//! taken next, a source asked for its next item only when its head was taken. Memory
//! is one item per source, whatever the streams' lengths.
//!
//! Not here: where the items come from (the caller fills the heads it is asked for).

/// One source's state.
#[derive(Debug)]
enum Slot<T> {
    /// Its next item has not been asked for yet.
    Empty,
    Head(T),
    /// It has nothing more.
    Done,
}

/// The heads of `n` sources.
#[derive(Debug)]
pub(super) struct Heads<T> {
    slots: Vec<Slot<T>>,
}

impl<T> Heads<T> {
    pub(super) fn new(n: usize) -> Self {
        Self {
            slots: (0..n).map(|_| Slot::Empty).collect(),
        }
    }

    /// The first source whose next item is needed before the least can be known.
    pub(super) fn need(&self) -> Option<usize> {
        self.slots.iter().position(|s| matches!(s, Slot::Empty))
    }

    /// Source `i`'s next item, or `None` when it has no more.
    pub(super) fn put(&mut self, i: usize, item: Option<T>) {
        self.slots[i] = item.map_or(Slot::Done, Slot::Head);
    }

    /// The least head (by `less`; the lower source on a tie) and its source, leaving that
    /// source to be refilled; `None` when every source is done. Call only when
    /// [`Heads::need`] is `None`.
    pub(super) fn pop_min(&mut self, less: impl Fn(&T, &T) -> bool) -> Option<(usize, T)> {
        debug_assert!(self.need().is_none(), "a head is missing");
        let mut best: Option<usize> = None;
        for (i, slot) in self.slots.iter().enumerate() {
            if let Slot::Head(item) = slot {
                let better = match best.map(|b| &self.slots[b]) {
                    Some(Slot::Head(current)) => less(item, current),
                    _ => true,
                };
                if better {
                    best = Some(i);
                }
            }
        }
        let i = best?;
        match std::mem::replace(&mut self.slots[i], Slot::Empty) {
            Slot::Head(item) => Some((i, item)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives [`Heads`] as `Listing::next` does, over in-memory sources.
    fn merge(sources: Vec<Vec<u32>>) -> (Vec<(usize, u32)>, usize) {
        let mut iters: Vec<_> = sources.into_iter().map(Vec::into_iter).collect();
        let mut heads = Heads::new(iters.len());
        let (mut out, mut peak) = (Vec::new(), 0);
        loop {
            while let Some(i) = heads.need() {
                heads.put(i, iters[i].next());
            }
            peak = peak.max(
                heads
                    .slots
                    .iter()
                    .filter(|s| matches!(s, Slot::Head(_)))
                    .count(),
            );
            match heads.pop_min(|a, b| a < b) {
                Some(item) => out.push(item),
                None => return (out, peak),
            }
        }
    }

    #[test]
    fn merges_sorted_sources() {
        type Case = (&'static str, Vec<Vec<u32>>, Vec<(usize, u32)>);
        let cases: Vec<Case> = vec![
            ("no sources", vec![], vec![]),
            ("all empty", vec![vec![], vec![]], vec![]),
            (
                "one source",
                vec![vec![1, 2, 3]],
                vec![(0, 1), (0, 2), (0, 3)],
            ),
            (
                "interleaved",
                vec![vec![1, 4, 6], vec![2, 3, 7]],
                vec![(0, 1), (1, 2), (1, 3), (0, 4), (0, 6), (1, 7)],
            ),
            (
                "one empty among three",
                vec![vec![5], vec![], vec![1, 9]],
                vec![(2, 1), (0, 5), (2, 9)],
            ),
            (
                "ties go to the lower source, in order",
                vec![vec![2, 2], vec![1, 2]],
                vec![(1, 1), (0, 2), (0, 2), (1, 2)],
            ),
            (
                "one source runs long",
                vec![vec![1], vec![2, 3, 4, 5]],
                vec![(0, 1), (1, 2), (1, 3), (1, 4), (1, 5)],
            ),
        ];
        for (name, sources, want) in cases {
            let n = sources.len();
            let (got, peak) = merge(sources);
            assert_eq!(got, want, "{name}");
            assert!(peak <= n, "{name}: held {peak} items for {n} sources");
        }
    }
}
