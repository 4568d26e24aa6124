//! The configuration of fair shares: tenants, weights, lanes. The per-key discipline that uses
//! it is in `shares.rs`.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::error::ConfigError;

/// Who a request is for, and which lane it travels in: what a [`Fairness`] budget shares its
/// keys' quotas by. Both parts are optional: a request without a tenant counts as the one
/// anonymous tenant (at the [default weight](Fairness::default_weight)); one without a lane (or
/// with a lane the budget does not know) travels in the [default lane](Fairness::default_lane).
///
/// On a budget without [`Fairness`] the class is ignored: the queue is FIFO.
///
/// One pointer wide (an empty class allocates nothing), so a waiting request's future stays
/// as small as without it; clones share it.
///
/// ```
/// use bedrock_throttle::budget::Class;
///
/// let class = Class::tenant("acme").with_lane("batch");
/// assert_eq!(class.tenant_name(), Some("acme"));
/// assert_eq!(class.lane_name(), Some("batch"));
/// assert!(Class::default().is_empty());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Class(Option<Arc<ClassParts>>);

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
struct ClassParts {
    tenant: Option<Arc<str>>,
    lane: Option<Arc<str>>,
}

/// The anonymous tenant in the default lane (a request without a class).
pub(crate) static ANONYMOUS: Class = Class(None);

impl Class {
    /// The class of `tenant`, in the default lane.
    pub fn tenant(tenant: impl Into<Arc<str>>) -> Self {
        Class::default().with_tenant(tenant)
    }

    /// The class of the anonymous tenant in `lane`.
    pub fn lane(lane: impl Into<Arc<str>>) -> Self {
        Class::default().with_lane(lane)
    }

    fn parts(&mut self) -> &mut ClassParts {
        Arc::make_mut(self.0.get_or_insert_with(Arc::default))
    }

    /// The same class in `lane`.
    pub fn with_lane(mut self, lane: impl Into<Arc<str>>) -> Self {
        self.parts().lane = Some(lane.into());
        self
    }

    /// The same class for `tenant`.
    pub fn with_tenant(mut self, tenant: impl Into<Arc<str>>) -> Self {
        self.parts().tenant = Some(tenant.into());
        self
    }

    /// The tenant, if any.
    pub fn tenant_name(&self) -> Option<&str> {
        self.tenant_arc().map(|t| &**t)
    }

    /// The lane, if any.
    pub fn lane_name(&self) -> Option<&str> {
        self.0.as_ref()?.lane.as_deref()
    }

    /// Whether the class names nothing (the anonymous tenant in the default lane).
    pub fn is_empty(&self) -> bool {
        self.tenant_name().is_none() && self.lane_name().is_none()
    }

    pub(crate) fn tenant_arc(&self) -> Option<&Arc<str>> {
        self.0.as_ref()?.tenant.as_ref()
    }
}

/// One priority lane of a [`Fairness`] configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Lane {
    name: Arc<str>,
    priority: u32,
    minimum: f64,
}

impl Lane {
    /// A lane called `name`, of priority 0 and no guaranteed minimum.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Lane {
            name: name.into(),
            priority: 0,
            minimum: 0.0,
        }
    }

    /// Its priority: a backlogged lane of higher priority is served first (beyond the
    /// minimums). Lanes of equal priority are served in the order they were configured.
    pub fn priority(mut self, priority: u32) -> Self {
        self.priority = priority;
        self
    }

    /// Its guaranteed minimum share of each key's limit, in `[0, 1]`: while backlogged and
    /// below this share of the limit admitted in the last window, the lane goes first.
    pub fn minimum(mut self, share: f64) -> Self {
        self.minimum = share;
        self
    }

    /// The lane's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// The smallest weight a tenant may have ([`Fairness::weight`]).
pub const MIN_WEIGHT: f64 = 1e-3;

/// The largest weight a tenant may have ([`Fairness::weight`]).
pub const MAX_WEIGHT: f64 = 1e6;

/// The default bound on tracked tenants per key (see [`Fairness::max_tenants`]).
pub const DEFAULT_MAX_TENANTS: usize = 10_000;

/// The most tenants a key can track (tenant indices travel in 24 bits).
const TENANT_BITS_MAX: usize = (1 << 24) - 64;

/// Fair shares between tenants and priority lanes inside each key's quota, for
/// [`BudgetBuilder::fairness`](super::BudgetBuilder::fairness). See the
/// [module documentation](super#fair-shares) for what it guarantees.
#[derive(Debug, Clone)]
pub struct Fairness {
    lanes: Vec<Lane>,
    default_lane: Option<Arc<str>>,
    weights: HashMap<Arc<str>, f64>,
    default_weight: f64,
    max_tenants: usize,
}

impl Default for Fairness {
    fn default() -> Self {
        Self::new()
    }
}

impl Fairness {
    /// Weighted fair shares between tenants, every tenant of weight 1, one lane.
    pub fn new() -> Self {
        Fairness {
            lanes: Vec::new(),
            default_lane: None,
            weights: HashMap::new(),
            default_weight: 1.0,
            max_tenants: DEFAULT_MAX_TENANTS,
        }
    }

    /// The weight of `tenant`: backlogged tenants share a lane's admitted tokens in proportion
    /// to their weights. In [`MIN_WEIGHT`]`..=`[`MAX_WEIGHT`] (checked when the budget is
    /// built: [`ConfigError::InvalidWeight`]).
    pub fn weight(mut self, tenant: impl Into<Arc<str>>, weight: f64) -> Self {
        self.weights.insert(tenant.into(), weight);
        self
    }

    /// The weight of every tenant not given one (and of the anonymous tenant, and of the
    /// overflow tenant). Default 1.
    pub fn default_weight(mut self, weight: f64) -> Self {
        self.default_weight = weight;
        self
    }

    /// Adds a lane. Without lanes there is one, `"default"`, of priority 0 and no minimum.
    pub fn lane(mut self, lane: Lane) -> Self {
        self.lanes.push(lane);
        self
    }

    /// The lane of requests without a lane, or with a lane not configured. Default: the lane
    /// called `"default"` if there is one, else the last lane configured of the lowest priority.
    pub fn default_lane(mut self, lane: impl Into<Arc<str>>) -> Self {
        self.default_lane = Some(lane.into());
        self
    }

    /// The most tenants one key tracks at a time (per lane counted together). Tenants are
    /// tracked only while they have waiters, or while their account is ahead of the lane's
    /// virtual time; beyond the bound, a new tenant shares ONE overflow tenant of the lane (at
    /// the default weight, FIFO inside it); while the overflow tenant has waiters, every tenant
    /// not tracked joins it, so FIFO within a tenant holds. A tenant function that
    /// returns a new value per request therefore cannot grow memory without bound. Default
    /// [`DEFAULT_MAX_TENANTS`].
    pub fn max_tenants(mut self, max: usize) -> Self {
        self.max_tenants = max;
        self
    }

    /// Checks the configuration.
    pub(crate) fn build(self) -> Result<FairShared, ConfigError> {
        check_weight(None, self.default_weight)?;
        for (tenant, &w) in &self.weights {
            check_weight(Some(tenant), w)?;
        }
        let mut lanes = self.lanes;
        if lanes.is_empty() {
            lanes.push(Lane::new("default"));
        }
        for (i, lane) in lanes.iter().enumerate() {
            check_minimum(&lane.name, lane.minimum)?;
            if lanes[..i].iter().any(|l| l.name == lane.name) {
                return Err(ConfigError::DuplicateLane {
                    lane: lane.name.clone(),
                });
            }
        }
        check_minimums_total(lanes.iter().map(|l| l.minimum))?;
        if lanes.len() > 64 {
            return Err(ConfigError::InvalidFactor {
                name: "fairness lanes",
                value: lanes.len() as f64,
                expected: "at most 64",
            });
        }
        if self.max_tenants == 0 || self.max_tenants > TENANT_BITS_MAX {
            return Err(ConfigError::InvalidFactor {
                name: "fairness.max_tenants",
                value: self.max_tenants as f64,
                expected: "at least 1 and below 2^24 - 64",
            });
        }
        // Highest priority first; a stable sort keeps the configured order among equals.
        lanes.sort_by_key(|l| std::cmp::Reverse(l.priority));
        let default_lane = match &self.default_lane {
            Some(name) => lanes
                .iter()
                .position(|l| &l.name == name)
                .ok_or_else(|| ConfigError::UnknownLane { lane: name.clone() })?,
            None => lanes
                .iter()
                .position(|l| &*l.name == "default")
                .unwrap_or(lanes.len() - 1),
        };
        let minimums: Vec<f64> = lanes.iter().map(|l| l.minimum).collect();
        Ok(FairShared {
            minimums: AtomicBool::new(minimums.iter().any(|&m| m > 0.0)),
            names: lanes.into_iter().map(|l| l.name).collect(),
            default_lane,
            max_tenants: self.max_tenants,
            generation: AtomicU64::new(0),
            live: Mutex::new(Live {
                weights: self.weights,
                default_weight: self.default_weight,
                minimums,
            }),
        })
    }
}

/// The weights a tenant may have: [`MIN_WEIGHT`, `MAX_WEIGHT`]. The virtual-time tags grow by
/// `cost / weight`: a weight near zero (a subnormal, say) would make them infinite, and a
/// ratio between weights beyond 10^9 says nothing a person means.
fn check_weight(tenant: Option<&Arc<str>>, weight: f64) -> Result<(), ConfigError> {
    if (MIN_WEIGHT..=MAX_WEIGHT).contains(&weight) {
        Ok(())
    } else {
        Err(ConfigError::InvalidWeight {
            tenant: tenant.cloned(),
            value: weight,
        })
    }
}

fn check_minimum(lane: &Arc<str>, minimum: f64) -> Result<(), ConfigError> {
    if (0.0..=1.0).contains(&minimum) {
        Ok(())
    } else {
        Err(ConfigError::InvalidMinimum {
            lane: lane.clone(),
            value: minimum,
        })
    }
}

fn check_minimums_total(minimums: impl Iterator<Item = f64>) -> Result<(), ConfigError> {
    let total: f64 = minimums.sum();
    // A little slack for sums of decimal fractions (0.1 + 0.2 + 0.7).
    if total > 1.0 + 1e-9 {
        Err(ConfigError::MinimumsAboveWhole { total })
    } else {
        Ok(())
    }
}

/// What every key of a fair budget shares: the lanes (fixed at build), and the settings that
/// can change at run time, with a generation the keys compare to know when to re-read them.
#[derive(Debug)]
pub(crate) struct FairShared {
    /// Lane names, highest priority first (a lane's index is its rank).
    names: Box<[Arc<str>]>,
    default_lane: usize,
    pub(crate) max_tenants: usize,
    generation: AtomicU64,
    /// Whether some lane has a minimum (admissions that do not wait are then counted per lane).
    minimums: AtomicBool,
    live: Mutex<Live>,
}

/// The settings changeable at run time.
#[derive(Debug, Clone)]
pub(crate) struct Live {
    pub(crate) weights: HashMap<Arc<str>, f64>,
    pub(crate) default_weight: f64,
    /// Per lane, by rank.
    pub(crate) minimums: Vec<f64>,
}

impl Live {
    pub(crate) fn weight_of(&self, tenant: Option<&Arc<str>>) -> f64 {
        tenant
            .and_then(|t| self.weights.get(t).copied())
            .unwrap_or(self.default_weight)
    }
}

impl FairShared {
    /// The rank of the lane of `class` (the default lane for none or an unknown one).
    #[inline]
    pub(crate) fn lane_of(&self, class: &Class) -> usize {
        match class.lane_name() {
            None => self.default_lane,
            Some(name) => self
                .names
                .iter()
                .position(|n| &**n == name)
                .unwrap_or(self.default_lane),
        }
    }

    pub(crate) fn lanes(&self) -> usize {
        self.names.len()
    }

    /// Whether some lane has a minimum share.
    #[inline]
    pub(crate) fn has_minimums(&self) -> bool {
        self.minimums.load(Ordering::Relaxed)
    }

    #[inline]
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// A copy of the live settings and their generation.
    pub(crate) fn snapshot(&self) -> (u64, Live) {
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        (self.generation(), live.clone())
    }

    /// The weight of one tenant now.
    pub(crate) fn weight_of(&self, tenant: Option<&Arc<str>>) -> f64 {
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        live.weight_of(tenant)
    }

    pub(crate) fn set_weight(&self, tenant: Arc<str>, weight: f64) -> Result<(), ConfigError> {
        check_weight(Some(&tenant), weight)?;
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        live.weights.insert(tenant, weight);
        self.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    pub(crate) fn set_default_weight(&self, weight: f64) -> Result<(), ConfigError> {
        check_weight(None, weight)?;
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        live.default_weight = weight;
        self.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    pub(crate) fn set_minimum(&self, lane: &str, minimum: f64) -> Result<(), ConfigError> {
        let Some(rank) = self.names.iter().position(|n| &**n == lane) else {
            return Err(ConfigError::UnknownLane { lane: lane.into() });
        };
        check_minimum(&self.names[rank], minimum)?;
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        let others = live
            .minimums
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != rank)
            .map(|(_, &m)| m);
        check_minimums_total(others.chain(std::iter::once(minimum)))?;
        live.minimums[rank] = minimum;
        self.minimums
            .store(live.minimums.iter().any(|&m| m > 0.0), Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tenant {}, lane {}",
            self.tenant_name().unwrap_or("(anonymous)"),
            self.lane_name().unwrap_or("(default)")
        )
    }
}
