//! The allocator network: two small MLPs in candle.
//!
//! - The **step head** maps step features to one logit per pool model: "this step, run on
//!   model m, keeps the answer right".
//! - The **route head** maps question features to one logit per route candidate, in the
//!   order of [`route_candidates`]: answer directly with each model, or decompose.
//!
//! Weights are a safetensors file; the manifest (JSON, next to it) names the pool and the
//! feature layout the weights expect, so a router never runs against another pool.
//!
//! Invariant: **a router routes only the task families it was trained on.** SFT records
//! the families of its labels in the manifest (`families`; GRPO adds its training
//! questions' to a list that is there); `learned` and `query-level` answer a question of
//! any other family directly on the largest model ([`Manifest::routes_family`]). Routers
//! without the field route every family.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use r2_decomposer::TaskFamily;

use crate::features::FeatureLayout;
use crate::rng::SplitMix64;
use crate::RouterError;

pub const MANIFEST_FORMAT: &str = "r2reasoner-router/1";

/// A file next to a router's weights: `dir/x.safetensors` → `dir/x.<what>`.
pub fn sibling(weights: &Path, what: &str) -> PathBuf {
    let stem = weights
        .file_name()
        .map(|s| {
            s.to_string_lossy()
                .trim_end_matches(".safetensors")
                .to_string()
        })
        .unwrap_or_else(|| "router".into());
    weights.with_file_name(format!("{stem}.{what}"))
}

/// A candidate route of the route head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteCandidate {
    Direct(usize),
    Decompose,
}

/// Candidates from cheapest to dearest: direct on each model (the pool is ordered cheapest
/// first), with decomposing inserted at `decompose_at` (0 = before every direct answer,
/// `models` = after them all). Where decomposing belongs depends on the pool and its prices,
/// so SFT measures it on the labels (`r2_training::labels::decompose_position`) and the
/// manifest keeps it.
pub fn route_candidates(models: usize, decompose_at: usize) -> Vec<RouteCandidate> {
    let mut c: Vec<RouteCandidate> = (0..models).map(RouteCandidate::Direct).collect();
    c.insert(decompose_at.min(models), RouteCandidate::Decompose);
    c
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    /// Pool model ids, cheapest first, exactly as the router was trained.
    pub pool: Vec<String>,
    pub layout: FeatureLayout,
    pub hidden: usize,
    /// The threshold used when the policy name does not give one.
    pub threshold: f64,
    /// `sft` or `grpo`.
    pub stage: String,
    /// Where decomposing sits among the route candidates (see [`route_candidates`]);
    /// absent in routers made before it was measured, which put it before direct on the
    /// largest model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decompose_at: Option<usize>,
    /// The task families of the questions it was trained on. A `learned` or `query-level`
    /// policy answers questions of any other family directly on the largest model: the
    /// router's predictions for a family it never saw are not evidence (the GSM8K-trained
    /// router sent CSQA questions to the small models and scored 23% against 49%). Absent in
    /// routers made before it was recorded: every family is routed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub families: Option<Vec<TaskFamily>>,
    /// The keep decisions `+keep` applies to this router's answers, one set per price
    /// profile it was calibrated under (fitted by `train signals --router`); empty until
    /// fitted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keep: Vec<r2_allocator::KeepSet>,
    /// Where the weights came from (dataset, labels, seed, metrics); free-form.
    #[serde(default)]
    pub notes: serde_json::Map<String, serde_json::Value>,
}

impl Manifest {
    /// Whether the router was trained on questions of `family` (true when not recorded).
    pub fn routes_family(&self, family: TaskFamily) -> bool {
        self.families.as_ref().is_none_or(|f| f.contains(&family))
    }

    /// Record that the router has now been trained on `families` as well.
    pub fn add_families(&mut self, families: impl IntoIterator<Item = TaskFamily>) {
        let list = self.families.get_or_insert_with(Vec::new);
        for f in families {
            if !list.contains(&f) {
                list.push(f);
            }
        }
        list.sort_by_key(|f| TaskFamily::ALL.iter().position(|g| g == f));
    }

    /// The keep decisions calibrated under `profile`; an error lists the profiles it has.
    pub fn keep_for(&self, profile: &str) -> Result<&r2_allocator::KeepSet, String> {
        self.keep.iter().find(|k| k.profile == profile).ok_or_else(|| {
            if self.keep.is_empty() {
                "it has no keep decisions; fit them with `r2reasoner train signals --router`"
                    .to_string()
            } else {
                format!(
                    "it has keep decisions for the {} price profile(s), not for '{profile}'; fit them under it with `r2reasoner train signals --router --price-profile {profile}`",
                    self.keep
                        .iter()
                        .map(|k| format!("'{}'", k.profile))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        })
    }

    /// Where decomposing sits among the route candidates.
    pub fn decompose_at(&self) -> usize {
        self.decompose_at
            .unwrap_or(self.pool.len().saturating_sub(1))
    }

    /// Refuse a router trained for another pool or feature layout.
    pub fn check(&self, pool: &[String], layout: &FeatureLayout) -> Result<(), RouterError> {
        for (i, keep) in self.keep.iter().enumerate() {
            keep.validate().map_err(RouterError::Invalid)?;
            if self.keep[..i].iter().any(|k| k.profile == keep.profile) {
                return Err(RouterError::Invalid(format!(
                    "the manifest has two keep decision sets for the '{}' price profile",
                    keep.profile
                )));
            }
            if let Some(m) = keep.models.iter().find(|m| !self.pool.contains(&m.model)) {
                return Err(RouterError::Invalid(format!(
                    "the manifest has a keep decision for {}, which is not in its pool",
                    m.model
                )));
            }
        }
        if let Some(d) = self.decompose_at.filter(|&d| d > self.pool.len()) {
            return Err(RouterError::Invalid(format!(
                "the manifest puts decomposing at route position {d} of a {}-model pool",
                self.pool.len()
            )));
        }
        if self.pool != pool {
            return Err(RouterError::PoolMismatch {
                trained: self.pool.clone(),
                pool: pool.to_vec(),
            });
        }
        if &self.layout != layout {
            return Err(RouterError::LayoutMismatch {
                trained: format!("{:?}", self.layout),
                now: format!("{layout:?}"),
            });
        }
        Ok(())
    }
}

/// One hidden layer with ReLU.
pub struct Mlp {
    pub w1: Var,
    pub b1: Var,
    pub w2: Var,
    pub b2: Var,
}

impl Mlp {
    fn init(
        input: usize,
        hidden: usize,
        output: usize,
        rng: &mut SplitMix64,
    ) -> Result<Self, RouterError> {
        let dev = Device::Cpu;
        let mut mat = |rows: usize, cols: usize| -> Result<Var, RouterError> {
            // He initialisation for the ReLU layer, scaled down for the output layer.
            let scale = (2.0 / cols as f64).sqrt();
            let data: Vec<f32> = (0..rows * cols)
                .map(|_| (rng.normal() * scale) as f32)
                .collect();
            Ok(Var::from_tensor(&Tensor::from_vec(
                data,
                (rows, cols),
                &dev,
            )?)?)
        };
        let w1 = mat(hidden, input)?;
        let w2 = mat(output, hidden)?;
        Ok(Self {
            w1,
            b1: Var::from_tensor(&Tensor::zeros(hidden, DType::F32, &dev)?)?,
            w2,
            b2: Var::from_tensor(&Tensor::zeros(output, DType::F32, &dev)?)?,
        })
    }

    /// `x`: (batch, input) → logits (batch, output).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, RouterError> {
        let h = x
            .matmul(&self.w1.as_tensor().t()?)?
            .broadcast_add(self.b1.as_tensor())?
            .relu()?;
        Ok(h.matmul(&self.w2.as_tensor().t()?)?
            .broadcast_add(self.b2.as_tensor())?)
    }

    pub fn vars(&self) -> Vec<Var> {
        vec![
            self.w1.clone(),
            self.b1.clone(),
            self.w2.clone(),
            self.b2.clone(),
        ]
    }

    fn tensors(&self, prefix: &str, out: &mut HashMap<String, Tensor>) {
        for (name, v) in [
            ("w1", &self.w1),
            ("b1", &self.b1),
            ("w2", &self.w2),
            ("b2", &self.b2),
        ] {
            out.insert(format!("{prefix}.{name}"), v.as_tensor().clone());
        }
    }

    fn from_tensors(
        prefix: &str,
        map: &HashMap<String, Tensor>,
        shapes: [&[usize]; 4],
        path: &Path,
    ) -> Result<Self, RouterError> {
        let mut vars = Vec::new();
        for (name, shape) in ["w1", "b1", "w2", "b2"].iter().zip(shapes) {
            let key = format!("{prefix}.{name}");
            let t = map.get(&key).ok_or_else(|| RouterError::Checkpoint {
                path: path.to_path_buf(),
                reason: format!("tensor '{key}' is missing"),
            })?;
            if t.dims() != shape {
                return Err(RouterError::Checkpoint {
                    path: path.to_path_buf(),
                    reason: format!(
                        "tensor '{key}' has shape {:?} but the manifest's pool and feature layout need {:?}",
                        t.dims(),
                        shape
                    ),
                });
            }
            vars.push(Var::from_tensor(&t.to_dtype(DType::F32)?)?);
        }
        let mut it = vars.into_iter();
        let mut next = || it.next().expect("four tensors");
        Ok(Self {
            w1: next(),
            b1: next(),
            w2: next(),
            b2: next(),
        })
    }

    fn copy(&self) -> Result<Self, RouterError> {
        let c =
            |v: &Var| -> Result<Var, RouterError> { Ok(Var::from_tensor(&v.as_tensor().copy()?)?) };
        Ok(Self {
            w1: c(&self.w1)?,
            b1: c(&self.b1)?,
            w2: c(&self.w2)?,
            b2: c(&self.b2)?,
        })
    }

    fn is_finite(&self) -> Result<bool, RouterError> {
        for v in self.vars() {
            let s = v.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            if s.iter().any(|x| !x.is_finite()) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// The allocator: manifest plus both heads.
pub struct RouterNet {
    pub manifest: Manifest,
    pub step: Mlp,
    pub route: Mlp,
}

impl RouterNet {
    pub fn new(
        pool: Vec<String>,
        layout: FeatureLayout,
        hidden: usize,
        seed: u64,
    ) -> Result<Self, RouterError> {
        let n = pool.len();
        if n == 0 {
            return Err(RouterError::Invalid("the pool has no models".into()));
        }
        let mut rng = SplitMix64::new(seed);
        let step = Mlp::init(layout.step_dim, hidden, n, &mut rng)?;
        let route = Mlp::init(layout.route_dim, hidden, n + 1, &mut rng)?;
        Ok(Self {
            manifest: Manifest {
                format: MANIFEST_FORMAT.to_string(),
                pool,
                layout,
                hidden,
                threshold: 0.5,
                stage: "init".into(),
                decompose_at: None,
                families: None,
                keep: Vec::new(),
                notes: Default::default(),
            },
            step,
            route,
        })
    }

    /// The route head's candidates, in the order of its outputs (cheapest first).
    pub fn route_candidates(&self) -> Vec<RouteCandidate> {
        route_candidates(self.models(), self.manifest.decompose_at())
    }

    pub fn models(&self) -> usize {
        self.manifest.pool.len()
    }

    pub fn vars(&self) -> Vec<Var> {
        let mut v = self.step.vars();
        v.extend(self.route.vars());
        v
    }

    /// A frozen copy (the KL reference, the best checkpoint so far).
    pub fn snapshot(&self) -> Result<Self, RouterError> {
        Ok(Self {
            manifest: self.manifest.clone(),
            step: self.step.copy()?,
            route: self.route.copy()?,
        })
    }

    pub fn is_finite(&self) -> Result<bool, RouterError> {
        Ok(self.step.is_finite()? && self.route.is_finite()?)
    }

    /// Step logits for a batch of feature rows.
    pub fn step_logits(&self, rows: &[Vec<f32>]) -> Result<Vec<Vec<f64>>, RouterError> {
        logits(&self.step, rows, self.manifest.layout.step_dim)
    }

    pub fn route_logits(&self, rows: &[Vec<f32>]) -> Result<Vec<Vec<f64>>, RouterError> {
        logits(&self.route, rows, self.manifest.layout.route_dim)
    }

    /// The manifest lives next to the weights: `x.safetensors` → `x.manifest.json`.
    pub fn manifest_path(weights: &Path) -> PathBuf {
        sibling(weights, "manifest.json")
    }

    /// Write weights and manifest atomically (temporary files, then rename).
    pub fn save(&self, path: &Path) -> Result<(), RouterError> {
        let mut map = HashMap::new();
        self.step.tensors("step", &mut map);
        self.route.tensors("route", &mut map);
        let io = |e: std::io::Error| RouterError::Io {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension("safetensors.tmp");
        candle_core::safetensors::save(&map, &tmp)?;
        let mpath = Self::manifest_path(path);
        let mtmp = mpath.with_extension("json.tmp");
        let json = serde_json::to_string_pretty(&self.manifest)
            .map_err(|e| RouterError::Invalid(e.to_string()))?;
        std::fs::write(&mtmp, json + "\n").map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)?;
        std::fs::rename(&mtmp, &mpath).map_err(io)?;
        Ok(())
    }

    pub fn load(path: &Path) -> Result<Self, RouterError> {
        let mpath = Self::manifest_path(path);
        // Weights first: a path that is not a router file is named as such.
        let weights = r2_files::read(path, r2_files::limits::WEIGHTS).map_err(|e| {
            RouterError::Checkpoint {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }
        })?;
        let text = r2_files::read_to_string(&mpath, r2_files::limits::CONFIG).map_err(|e| {
            RouterError::Checkpoint {
                path: path.to_path_buf(),
                reason: format!("cannot read its manifest: {e}"),
            }
        })?;
        Self::from_bytes(&weights, &text, path)
    }

    /// Load from memory (the shipped router is compiled into the binary).
    pub fn from_bytes(weights: &[u8], manifest: &str, path: &Path) -> Result<Self, RouterError> {
        let bad = |reason: String| RouterError::Checkpoint {
            path: path.to_path_buf(),
            reason,
        };
        let manifest: Manifest =
            serde_json::from_str(manifest).map_err(|e| bad(format!("bad manifest: {e}")))?;
        if manifest.format != MANIFEST_FORMAT {
            return Err(bad(format!(
                "manifest format '{}' is not '{MANIFEST_FORMAT}'",
                manifest.format
            )));
        }
        let map = candle_core::safetensors::load_buffer(weights, &Device::Cpu)
            .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
        let (h, l, n) = (manifest.hidden, &manifest.layout, manifest.pool.len());
        let step = Mlp::from_tensors("step", &map, [&[h, l.step_dim], &[h], &[n, h], &[n]], path)?;
        let route = Mlp::from_tensors(
            "route",
            &map,
            [&[h, l.route_dim], &[h], &[n + 1, h], &[n + 1]],
            path,
        )?;
        let net = Self {
            manifest,
            step,
            route,
        };
        if !net.is_finite()? {
            return Err(bad("weights contain NaN or infinity".into()));
        }
        Ok(net)
    }
}

fn logits(mlp: &Mlp, rows: &[Vec<f32>], dim: usize) -> Result<Vec<Vec<f64>>, RouterError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    if let Some(r) = rows.iter().find(|r| r.len() != dim) {
        return Err(RouterError::Invalid(format!(
            "feature row has {} values, the router expects {dim}",
            r.len()
        )));
    }
    let x = to_tensor(rows)?;
    let out = mlp.forward(&x)?.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    Ok(out)
}

pub fn to_tensor(rows: &[Vec<f32>]) -> Result<Tensor, RouterError> {
    let cols = rows.first().map(|r| r.len()).unwrap_or(0);
    let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Ok(Tensor::from_vec(flat, (rows.len(), cols), &Device::Cpu)?)
}
