//! What to make of a list whose revision is below what the watcher already holds.
//!
//! Two things give such a list. A member behind the one the watch was on (a follower that has
//! not applied the last entries yet) catches up within moments: taking its list would bring
//! back keys already seen deleted, so the list is refused and asked again shortly. A store
//! restored from an older backup (`etcdutl snapshot restore` without `--bump-revision`) never
//! catches up: its revision went back for good, and after a few refusals its list is the truth
//! after all. The watcher then reports the regression, so that everything which compares
//! revisions (a store's revision, a registrar's "newer than my last put") starts over from the
//! listed one.
//!
//! A plain state machine, no runtime: the watcher asks it about each list.

use registry_api::Revision;

/// How many older lists are refused in a row before one is believed.
pub(super) const MAX_OLDER_LISTS: u32 = 3;

/// The verdict on one list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ListVerdict {
    /// At or above what is held (or nothing is held yet): take it.
    Take,
    /// Older than what is held: refuse it and list again soon; `refusal` counts from 1.
    Refuse {
        /// How many older lists in a row, this one included.
        refusal: u32,
    },
    /// Older than what is held, again and again: the store went back (a restore). Take it,
    /// and report that the revision fell from `held` to `listed`.
    Regressed {
        /// The revision the watcher held.
        held: Revision,
        /// The revision the store is at now.
        listed: Revision,
    },
}

/// The rule, with the count of older lists refused in a row.
#[derive(Debug, Default)]
pub(super) struct OlderLists {
    refused: u32,
}

impl OlderLists {
    /// Judges a list at `listed` when the watcher holds `held` (zero before the first list).
    pub(super) fn judge(&mut self, held: Revision, listed: Revision) -> ListVerdict {
        if listed >= held {
            self.refused = 0;
            return ListVerdict::Take;
        }
        if self.refused < MAX_OLDER_LISTS {
            self.refused += 1;
            return ListVerdict::Refuse {
                refusal: self.refused,
            };
        }
        self.refused = 0;
        ListVerdict::Regressed { held, listed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(revision: i64) -> Revision {
        Revision(revision)
    }

    #[test]
    fn a_list_at_or_above_what_is_held_is_taken() {
        let mut rule = OlderLists::default();
        assert_eq!(rule.judge(r(0), r(1)), ListVerdict::Take, "the first list");
        assert_eq!(rule.judge(r(7), r(7)), ListVerdict::Take, "nothing changed");
        assert_eq!(
            rule.judge(r(7), r(1_007)),
            ListVerdict::Take,
            "a bumped restore"
        );
    }

    #[test]
    fn an_older_list_is_refused_a_few_times_then_believed_as_a_regression() {
        let mut rule = OlderLists::default();
        for refusal in 1..=MAX_OLDER_LISTS {
            assert_eq!(rule.judge(r(38), r(6)), ListVerdict::Refuse { refusal });
        }
        assert_eq!(
            rule.judge(r(38), r(9)),
            ListVerdict::Regressed {
                held: r(38),
                listed: r(9)
            }
        );
        // Believed once: the count starts over for the next time.
        assert_eq!(rule.judge(r(9), r(2)), ListVerdict::Refuse { refusal: 1 });
    }

    #[test]
    fn a_member_that_caught_up_resets_the_count() {
        let mut rule = OlderLists::default();
        assert_eq!(rule.judge(r(38), r(37)), ListVerdict::Refuse { refusal: 1 });
        assert_eq!(rule.judge(r(38), r(37)), ListVerdict::Refuse { refusal: 2 });
        assert_eq!(rule.judge(r(38), r(38)), ListVerdict::Take, "caught up");
        // A later lagging member gets the whole allowance again, not what was left.
        for refusal in 1..=MAX_OLDER_LISTS {
            assert_eq!(rule.judge(r(50), r(49)), ListVerdict::Refuse { refusal });
        }
    }
}
