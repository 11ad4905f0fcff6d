//! The one summary table of `cargo xtask bench`: one row per measurement,
//! afsd-rs against a peer measured in the same run, the ratio and whether
//! it meets its target (issue 13).  Only reports: nothing here fails.

/// What a row's ratio (peer seconds / afsd-rs seconds, >1 = afsd-rs
/// faster) must reach.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Target {
    pub min: f64,
    /// `>` instead of `>=` ("faster than").
    pub strict: bool,
    /// Also in each run on its own (paired by run), not only best of runs.
    pub every_run: bool,
    /// The target in the words.
    pub text: &'static str,
}

impl Target {
    pub const fn at_least(min: f64, text: &'static str) -> Target {
        Target {
            min,
            strict: false,
            every_run: false,
            text,
        }
    }
    pub const fn above(min: f64, text: &'static str) -> Target {
        Target {
            min,
            strict: true,
            every_run: false,
            text,
        }
    }
    pub const fn in_every_run(self) -> Target {
        Target {
            every_run: true,
            ..self
        }
    }
    fn ok(&self, ratio: f64) -> bool {
        if self.strict {
            ratio > self.min
        } else {
            ratio >= self.min
        }
    }
}

/// One measurement: seconds of every run, afsd-rs and the peer.
pub struct Row {
    pub case: String,
    pub afsd: Vec<f64>,
    pub peer: String,
    pub peer_s: Vec<f64>,
    pub target: Option<Target>,
}

/// Shortest time of the runs (NaN if none).
pub fn best(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NAN, f64::min)
}

/// peer / afsd-rs; NaN when either is missing or not positive.
pub fn ratio(afsd: f64, peer: f64) -> f64 {
    if afsd > 0.0 && peer > 0.0 {
        peer / afsd
    } else {
        f64::NAN
    }
}

impl Row {
    pub fn new(
        case: impl Into<String>,
        afsd: &[f64],
        peer: impl Into<String>,
        peer_s: &[f64],
        target: Option<Target>,
    ) -> Row {
        Row {
            case: case.into(),
            afsd: afsd.to_vec(),
            peer: peer.into(),
            peer_s: peer_s.to_vec(),
            target,
        }
    }

    pub fn ratio(&self) -> f64 {
        ratio(best(&self.afsd), best(&self.peer_s))
    }

    /// "yes", "no", "n/a" (no figure) or "" (no target).
    pub fn met(&self) -> &'static str {
        let Some(t) = self.target else { return "" };
        let r = self.ratio();
        if r.is_nan() {
            return "n/a";
        }
        let mut ok = t.ok(r);
        if t.every_run {
            ok &= self
                .afsd
                .iter()
                .zip(&self.peer_s)
                .all(|(a, p)| t.ok(ratio(*a, *p)));
        }
        if ok {
            "yes"
        } else {
            "no"
        }
    }
}

fn num(s: f64) -> String {
    if s.is_nan() {
        "n/a".into()
    } else {
        format!("{s:.3}")
    }
}

/// The Markdown table of `rows`.
pub fn table(rows: &[Row], runs: u32) -> String {
    let mut md = String::from(
        "| case | afsd-rs s | peer | peer s | ratio | target | met |\n\
         |---|---:|---|---:|---:|---|---|\n",
    );
    for r in rows {
        let ratio = r.ratio();
        let ratio = if ratio.is_nan() {
            "n/a".into()
        } else {
            format!("{ratio:.2}x")
        };
        let target = r.target.map_or("", |t| t.text);
        md.push_str(&format!(
            "| {} | {} | {} | {} | {ratio} | {target} | {} |\n",
            r.case,
            num(best(&r.afsd)),
            r.peer,
            num(best(&r.peer_s)),
            r.met()
        ));
    }
    md.push_str(&format!(
        "\nseconds = best of {runs} run(s); ratio = peer seconds / afsd-rs seconds \
         (>1 = afsd-rs faster); met: the target holds for the best times \
         (and in every run where the target says so).\n"
    ));
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_and_targets() {
        assert_eq!(best(&[3.0, 1.0, 2.0]), 1.0);
        assert!(best(&[]).is_nan());
        let r = Row::new("x", &[1.0], "p", &[3.0], Some(Target::at_least(3.0, "")));
        assert_eq!(r.ratio(), 3.0);
        assert_eq!(r.met(), "yes");
        let r = Row::new("x", &[1.0], "p", &[1.0], Some(Target::above(1.0, "")));
        assert_eq!(r.met(), "no");
        let r = Row::new("x", &[2.0], "p", &[1.0], Some(Target::at_least(0.5, "")));
        assert_eq!(r.met(), "yes");
        let r = Row::new("x", &[1.0], "p", &[2.0], None);
        assert_eq!(r.met(), "");
        let r = Row::new("x", &[], "p", &[2.0], Some(Target::at_least(1.0, "")));
        assert_eq!(r.met(), "n/a");
    }

    #[test]
    fn every_run_pairs_runs() {
        let t = Target::at_least(1.0, "").in_every_run();
        // best 1.0 vs 1.0 holds, but run 2 (2.0 vs 1.5) does not
        let r = Row::new("x", &[1.0, 2.0], "p", &[1.0, 1.5], Some(t));
        assert_eq!(r.met(), "no");
        let r = Row::new("x", &[1.0, 1.2], "p", &[1.0, 1.5], Some(t));
        assert_eq!(r.met(), "yes");
    }

    #[test]
    fn table_has_a_row_per_measurement() {
        let rows = [
            Row::new("a", &[1.0], "p", &[2.0], None),
            Row::new("b", &[1.0], "q", &[0.5], Some(Target::at_least(1.0, "t"))),
        ];
        let md = table(&rows, 1);
        assert!(md.contains("| a | 1.000 | p | 2.000 | 2.00x |  |  |"));
        assert!(md.contains("| b | 1.000 | q | 0.500 | 0.50x | t | no |"));
    }
}
