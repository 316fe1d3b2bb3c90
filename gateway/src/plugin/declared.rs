//! Metrics that plugins declare through the `metrics` import, served on `/metrics` under the
//! names the plugins give them.
//!
//! A family is created on its first declaration and registered on the gateway's registry;
//! later declarations of the same name (by the same plugin after a re-instantiation or
//! reload, or by another plugin) get the same family back if they agree on type, labels and
//! buckets. Each [`Handle`] carries its plugin's series cap: label sets beyond it are folded
//! into one series whose every label is `other`, and the plugin's drop counter rises.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use prometheus::{
    Counter, CounterVec, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, Opts, Registry,
};

/// Longest label value accepted, in bytes.
pub const MAX_LABEL_VALUE: usize = 256;
/// Most labels one metric may have.
pub const MAX_LABELS: usize = 16;
/// Most buckets one histogram may have.
pub const MAX_BUCKETS: usize = 64;
/// The value every label of the overflow series takes.
pub const OVERFLOW_VALUE: &str = "other";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

#[derive(Debug)]
enum Vecs {
    Counter(CounterVec),
    Gauge(GaugeVec),
    Histogram(HistogramVec),
}

#[derive(Debug, Clone)]
pub enum Child {
    Counter(Counter),
    Gauge(Gauge),
    Histogram(Histogram),
}

#[derive(Debug)]
struct Family {
    name: String,
    kind: Kind,
    labels: Vec<String>,
    buckets: Vec<f64>,
    owner: String,
    vec: Vecs,
    series: RwLock<HashMap<Vec<String>, Child>>,
    overflow: OnceLock<Child>,
}

impl Family {
    fn child(&self, values: &[&str]) -> Child {
        match &self.vec {
            Vecs::Counter(v) => Child::Counter(v.with_label_values(values)),
            Vecs::Gauge(v) => Child::Gauge(v.with_label_values(values)),
            Vecs::Histogram(v) => Child::Histogram(v.with_label_values(values)),
        }
    }
}

/// What a plugin asks for when it declares a metric.
#[derive(Debug, Clone)]
pub struct Declaration {
    pub kind: Kind,
    pub name: String,
    pub help: String,
    pub labels: Vec<String>,
    /// Histogram bucket bounds; empty means the Prometheus defaults.
    pub buckets: Vec<f64>,
}

/// Every plugin-declared family, plus the drop counter.
#[derive(Debug)]
pub struct Declared {
    registry: Registry,
    families: Mutex<HashMap<String, Arc<Family>>>,
    drops: IntCounterVec,
}

/// Why an update was not recorded as asked; the `reason` label of
/// `fedgate_plugin_metric_drops_total`.
#[derive(Debug, Clone, Copy)]
enum DropReason {
    SeriesCap,
    Labels,
    Value,
}

impl Declared {
    pub fn new(registry: Registry, drops: IntCounterVec) -> Self {
        Declared {
            registry,
            families: Mutex::new(HashMap::new()),
            drops,
        }
    }

    /// Declares (or finds) a metric for `plugin`, with `cap` series at most. The error is
    /// for the plugin's author.
    pub fn declare(&self, plugin: &str, d: Declaration, cap: usize) -> Result<Handle, String> {
        let Declaration {
            kind,
            name,
            help,
            labels,
            buckets,
        } = d;
        let (name, help) = (name.as_str(), help.as_str());
        validate_name(name)?;
        validate_labels(kind, &labels)?;
        let buckets = match kind {
            Kind::Histogram => validate_buckets(buckets)?,
            _ => Vec::new(),
        };
        let help = if help.trim().is_empty() {
            format!("Declared by plugin {plugin}.")
        } else {
            help.chars().take(1024).collect()
        };
        let mut families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let family = match families.get(name) {
            Some(f) => {
                if f.kind != kind || f.labels != labels || f.buckets != buckets {
                    return Err(format!(
                        "{name} is already declared by plugin {} as a {} with labels [{}]{}",
                        f.owner,
                        f.kind.as_str(),
                        f.labels.join(", "),
                        if f.kind == Kind::Histogram {
                            format!(" and buckets {:?}", f.buckets)
                        } else {
                            String::new()
                        }
                    ));
                }
                f.clone()
            }
            None => {
                let names: Vec<&str> = labels.iter().map(String::as_str).collect();
                let opts = Opts::new(name, help.clone());
                let vec = match kind {
                    Kind::Counter => {
                        Vecs::Counter(CounterVec::new(opts, &names).map_err(|e| err(&e))?)
                    }
                    Kind::Gauge => Vecs::Gauge(GaugeVec::new(opts, &names).map_err(|e| err(&e))?),
                    Kind::Histogram => Vecs::Histogram(
                        HistogramVec::new(
                            HistogramOpts::new(name, help).buckets(buckets.clone()),
                            &names,
                        )
                        .map_err(|e| err(&e))?,
                    ),
                };
                let collector: Box<dyn prometheus::core::Collector> = match &vec {
                    Vecs::Counter(v) => Box::new(v.clone()),
                    Vecs::Gauge(v) => Box::new(v.clone()),
                    Vecs::Histogram(v) => Box::new(v.clone()),
                };
                self.registry
                    .register(collector)
                    .map_err(|e| format!("{name} cannot be registered: {e}"))?;
                let f = Arc::new(Family {
                    name: name.to_string(),
                    kind,
                    labels,
                    buckets,
                    owner: plugin.to_string(),
                    vec,
                    series: RwLock::new(HashMap::new()),
                    overflow: OnceLock::new(),
                });
                families.insert(name.to_string(), f.clone());
                f
            }
        };
        let drop = |reason: &str| self.drops.with_label_values(&[plugin, name, reason]);
        Ok(Handle {
            drops: [drop("series_cap"), drop("labels"), drop("value")],
            family,
            cap,
        })
    }

    /// Number of families declared so far.
    pub fn len(&self) -> usize {
        self.families.lock().map(|f| f.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn err(e: &prometheus::Error) -> String {
    e.to_string()
}

/// One plugin's handle on one family.
#[derive(Debug, Clone)]
pub struct Handle {
    family: Arc<Family>,
    cap: usize,
    drops: [IntCounter; 3],
}

impl Handle {
    pub fn kind(&self) -> Kind {
        self.family.kind
    }

    pub fn name(&self) -> &str {
        &self.family.name
    }

    fn dropped(&self, why: DropReason) {
        self.drops[why as usize].inc();
    }

    /// The series for `values`, created within the cap.
    pub fn resolve(&self, values: Vec<String>) -> Series {
        if !self.fits(&values) {
            return Series::Invalid;
        }
        {
            let series = self.family.series.read().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = series.get(&values) {
                return Series::Live(c.clone());
            }
        }
        let mut series = self
            .family
            .series
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(c) = series.get(&values) {
            return Series::Live(c.clone());
        }
        if series.len() >= self.cap {
            drop(series);
            return self.overflow();
        }
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        let child = self.family.child(&refs);
        series.insert(values, child.clone());
        Series::Live(child)
    }

    /// Where `values` go when they may not get a series of their own: the `other` series,
    /// or nowhere if they do not fit the declaration.
    pub fn overflow_for(&self, values: &[String]) -> Series {
        if self.fits(values) {
            self.overflow()
        } else {
            Series::Invalid
        }
    }

    /// Whether `values` fit the declaration: one per label, none too long.
    fn fits(&self, values: &[String]) -> bool {
        values.len() == self.family.labels.len()
            && values.iter().all(|v| v.len() <= MAX_LABEL_VALUE)
    }

    /// The series every label set past the cap shares.
    fn overflow(&self) -> Series {
        let child = self.family.overflow.get_or_init(|| {
            let values = vec![OVERFLOW_VALUE; self.family.labels.len()];
            self.family.child(&values)
        });
        Series::Overflow(child.clone())
    }

    /// Whether `update` carries a value this metric accepts; `None` when the update does
    /// not fit the metric's type.
    fn accepts(&self, update: Update) -> Option<bool> {
        Some(match (update, self.family.kind) {
            (Update::Add(v), Kind::Counter) => v.is_finite() && v >= 0.0,
            (Update::Add(v) | Update::Set(v), Kind::Gauge)
            | (Update::Observe(v), Kind::Histogram) => v.is_finite(),
            _ => return None,
        })
    }

    /// Applies `update` to a resolved series of this family; false when the update does not
    /// fit the metric's type (the caller decides what that means). An invalid value is
    /// dropped before invalid labels, and both before the series cap counts.
    pub fn apply(&self, series: &Series, update: Update) -> bool {
        let Some(valid) = self.accepts(update) else {
            return false;
        };
        if !valid {
            self.dropped(DropReason::Value);
            return true;
        }
        let child = match series {
            Series::Live(c) => c,
            Series::Overflow(c) => {
                self.dropped(DropReason::SeriesCap);
                c
            }
            Series::Invalid => {
                self.dropped(DropReason::Labels);
                return true;
            }
        };
        match (child, update) {
            (Child::Counter(c), Update::Add(v)) => c.inc_by(v),
            (Child::Gauge(g), Update::Add(v)) => g.add(v),
            (Child::Gauge(g), Update::Set(v)) => g.set(v),
            (Child::Histogram(h), Update::Observe(v)) => h.observe(v),
            _ => {}
        }
        true
    }

    /// Resolves `values` and applies `update` in one go: the update by label values.
    /// An invalid value creates no series.
    pub fn update(&self, values: Vec<String>, update: Update) {
        match self.accepts(update) {
            None => {}
            Some(false) => self.dropped(DropReason::Value),
            Some(true) => {
                self.apply(&self.resolve(values), update);
            }
        }
    }
}

/// A label set of one family, resolved: the plugin's `series` handle points at one.
#[derive(Debug, Clone)]
pub enum Series {
    Live(Child),
    /// Past the series cap: the `other` series, each update counted as a drop.
    Overflow(Child),
    /// Labels that do not fit the declaration: each update is dropped.
    Invalid,
}

/// One update of a series.
#[derive(Debug, Clone, Copy)]
pub enum Update {
    /// A counter's increment or a gauge's delta.
    Add(f64),
    Set(f64),
    Observe(f64),
}

fn validate_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    if !ok {
        return Err(format!(
            "{name:?} is not a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)"
        ));
    }
    if name.starts_with("fedgate_") {
        return Err(format!(
            "{name}: names starting with fedgate_ are the gateway's own"
        ));
    }
    if name.len() > 200 {
        return Err(format!("{name}: at most 200 characters"));
    }
    Ok(())
}

fn validate_labels(kind: Kind, labels: &[String]) -> Result<(), String> {
    if labels.len() > MAX_LABELS {
        return Err(format!("at most {MAX_LABELS} labels"));
    }
    for (i, l) in labels.iter().enumerate() {
        let mut chars = l.chars();
        let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok || l.starts_with("__") || l.len() > 100 {
            return Err(format!(
                "{l:?} is not a label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)"
            ));
        }
        if kind == Kind::Histogram && l == "le" {
            return Err("a histogram cannot have a label named le".into());
        }
        if labels[..i].contains(l) {
            return Err(format!("label {l:?} is listed twice"));
        }
    }
    Ok(())
}

fn validate_buckets(buckets: Vec<f64>) -> Result<Vec<f64>, String> {
    if buckets.is_empty() {
        return Ok(prometheus::DEFAULT_BUCKETS.to_vec());
    }
    if buckets.len() > MAX_BUCKETS {
        return Err(format!("at most {MAX_BUCKETS} buckets"));
    }
    if buckets.iter().any(|b| !b.is_finite()) || buckets.windows(2).any(|w| w[0] >= w[1]) {
        return Err("buckets must be finite and strictly increasing".into());
    }
    Ok(buckets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared() -> (Registry, Declared) {
        let registry = Registry::new();
        let drops = IntCounterVec::new(
            Opts::new("fedgate_plugin_metric_drops_total", "drops"),
            &["plugin", "metric", "reason"],
        )
        .unwrap();
        registry.register(Box::new(drops.clone())).unwrap();
        (registry.clone(), Declared::new(registry, drops))
    }

    fn text(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&registry.gather(), &mut out)
            .unwrap();
        out
    }

    fn labels(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn decl(kind: Kind, name: &str, labels: Vec<String>, buckets: Vec<f64>) -> Declaration {
        Declaration {
            kind,
            name: name.into(),
            help: String::new(),
            labels,
            buckets,
        }
    }

    fn counter(name: &str, label_names: &[&str]) -> Declaration {
        decl(Kind::Counter, name, labels(label_names), Vec::new())
    }

    #[test]
    fn names_are_checked() {
        let (_, d) = declared();
        let named = |n: &str| d.declare("p", counter(n, &[]), 10).map(|_| ());
        assert!(named("federation_activities_total").is_ok());
        assert!(named("fedgate_mine_total")
            .unwrap_err()
            .contains("fedgate_"));
        assert!(named("9lives").is_err());
        assert!(named("has space").is_err());
        let bad_label = d.declare(
            "p",
            decl(Kind::Counter, "x_total", labels(&["__x"]), vec![]),
            1,
        );
        assert!(bad_label.is_err());
        let le = d.declare("p", decl(Kind::Histogram, "h", labels(&["le"]), vec![]), 1);
        assert!(le.unwrap_err().contains("le"));
        let buckets = d.declare("p", decl(Kind::Histogram, "h2", vec![], vec![2.0, 1.0]), 1);
        assert!(buckets.unwrap_err().contains("increasing"));
    }

    #[test]
    fn same_declaration_shares_a_family_and_a_clash_names_the_owner() {
        let (registry, d) = declared();
        let a = d
            .declare(
                "a",
                decl(Kind::Counter, "events_total", labels(&["kind"]), vec![]),
                10,
            )
            .unwrap();
        let b = d
            .declare(
                "b",
                decl(Kind::Counter, "events_total", labels(&["kind"]), vec![]),
                10,
            )
            .unwrap();
        a.update(labels(&["x"]), Update::Add(1.0));
        b.update(labels(&["x"]), Update::Add(2.0));
        assert!(text(&registry).contains("events_total{kind=\"x\"} 3"));
        let clash = d
            .declare(
                "c",
                decl(Kind::Gauge, "events_total", labels(&["kind"]), vec![]),
                10,
            )
            .unwrap_err();
        assert!(clash.contains("plugin a as a counter"), "{clash}");
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn series_beyond_the_cap_fold_into_other_and_are_counted() {
        let (registry, d) = declared();
        let h = d
            .declare(
                "p",
                decl(
                    Kind::Counter,
                    "hits_total",
                    labels(&["who", "what"]),
                    vec![],
                ),
                3,
            )
            .unwrap();
        for i in 0..10 {
            h.update(labels(&[&format!("w{i}"), "x"]), Update::Add(1.0));
        }
        h.update(labels(&["w0", "x"]), Update::Add(1.0));
        let out = text(&registry);
        assert!(out.contains("hits_total{what=\"x\",who=\"w0\"} 2"), "{out}");
        assert!(
            out.contains("hits_total{what=\"other\",who=\"other\"} 7"),
            "{out}"
        );
        assert!(!out.contains("who=\"w3\""));
        assert!(out.contains(
            "fedgate_plugin_metric_drops_total{metric=\"hits_total\",plugin=\"p\",reason=\"series_cap\"} 7"
        ));
    }

    #[test]
    fn resolved_series_update_like_labelled_updates() {
        let (registry, d) = declared();
        let h = d.declare("p", counter("req_total", &["who"]), 2).unwrap();
        let a = h.resolve(labels(&["a"]));
        let b = h.resolve(labels(&["b"]));
        let past_cap = h.resolve(labels(&["c"]));
        let invalid = h.resolve(labels(&["a", "b"]));
        assert!(matches!(a, Series::Live(_)) && matches!(b, Series::Live(_)));
        assert!(matches!(past_cap, Series::Overflow(_)));
        assert!(matches!(invalid, Series::Invalid));
        // Resolving again finds the same series, values included.
        assert!(h.apply(&a, Update::Add(2.0)));
        assert!(h.apply(&h.resolve(labels(&["a"])), Update::Add(1.0)));
        assert!(h.apply(&past_cap, Update::Add(5.0)));
        assert!(h.apply(&invalid, Update::Add(1.0)));
        assert!(h.apply(&b, Update::Add(-1.0)));
        // A counter has no `set` and no `observe`: the caller is told.
        assert!(!h.apply(&a, Update::Set(1.0)));
        assert!(!h.apply(&a, Update::Observe(1.0)));
        let out = text(&registry);
        assert!(out.contains("req_total{who=\"a\"} 3"), "{out}");
        assert!(out.contains("req_total{who=\"b\"} 0"), "{out}");
        assert!(out.contains("req_total{who=\"other\"} 5"), "{out}");
        for (reason, n) in [("series_cap", 1), ("labels", 1), ("value", 1)] {
            assert!(
                out.contains(&format!(
                    "fedgate_plugin_metric_drops_total{{metric=\"req_total\",plugin=\"p\",reason=\"{reason}\"}} {n}"
                )),
                "{reason}: {out}"
            );
        }
    }

    #[test]
    fn bad_updates_are_dropped_and_counted() {
        let (registry, d) = declared();
        let c = d
            .declare(
                "p",
                decl(Kind::Counter, "c_total", labels(&["k"]), vec![]),
                10,
            )
            .unwrap();
        c.update(labels(&["a", "b"]), Update::Add(1.0));
        c.update(labels(&["a"]), Update::Add(-1.0));
        c.update(labels(&["a"]), Update::Add(f64::NAN));
        c.update(labels(&[&"x".repeat(300)]), Update::Add(1.0));
        let mut g = counter("g", &[]);
        g.kind = Kind::Gauge;
        let g = d.declare("p", g, 10).unwrap();
        g.update(vec![], Update::Set(5.0));
        g.update(vec![], Update::Add(-2.0));
        let out = text(&registry);
        assert!(out.contains("reason=\"labels\"} 2"), "{out}");
        assert!(out.contains("reason=\"value\"} 2"), "{out}");
        assert!(out.contains("\ng 3\n"), "{out}");
        assert!(!out.contains("c_total{"));
    }
}
