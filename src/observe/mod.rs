//! The actual state: what the host has. Each submodule observes one kind of
//! resource and never fails the whole pass for one unreadable item: what
//! cannot be read is reported and left out.

pub mod cgroups;
pub mod lineage;
pub mod opencode;
pub mod processes;
pub mod worktrees;

/// `f` over `items` in chunks of at least `min_chunk`, spread over the
/// cores (at most four threads), results in the order of `items`. Each item
/// is a few small independent reads; with hundreds of them a pass on two
/// cores is noticeably faster. A chunk whose thread panicked is redone on
/// the calling thread: a partial view could make an owned resource look
/// like an orphan, or leave an agent unseen. (Should it panic again, the
/// panic reaches the caller.)
pub(crate) fn on_cores<T: Sync, R: Send>(
    items: &[T],
    min_chunk: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    let chunk = items.len().div_ceil(threads).max(min_chunk).max(1);
    let run = |part: &[T]| part.iter().map(&f).collect::<Vec<R>>();
    std::thread::scope(|s| {
        let mut parts = items.chunks(chunk);
        let first = parts.next();
        let spawned: Vec<_> = parts
            .map(|part| (part, s.spawn(move || run(part))))
            .collect();
        let mut out = first.map(run).unwrap_or_default();
        for (part, handle) in spawned {
            out.extend(handle.join().unwrap_or_else(|_| run(part)));
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::on_cores;

    #[test]
    fn on_cores_keeps_order_and_covers_every_item() {
        let items: Vec<u32> = (0..1000).collect();
        assert_eq!(
            on_cores(&items, 7, |x| x * 2),
            (0..1000).map(|x| x * 2).collect::<Vec<_>>()
        );
        assert_eq!(on_cores(&[] as &[u32], 7, |x| *x), Vec::<u32>::new());
        assert_eq!(on_cores(&[5u32], 64, |x| *x), vec![5]);
    }
}
