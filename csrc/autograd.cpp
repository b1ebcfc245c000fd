// The fused autograd Functions in C++ (libtorch), for the eager calls on the C++ backend:
// Leaky's (LeakyFunction: csrc/lif.cpp's kernels, standing in for LifFunction in
// fastlif/ops/lif.py) and every spec'd family's (SpecFamilyFunction: csrc/scan.h's kernels,
// standing in for FamilyFunction in fastlif/family.py). The same kernels, outputs, saved
// tensors and gradients as the Python Functions, bit for bit, with no Python between the
// kernels. What that saves: the interpreter's share of a call (Function.apply's Python, the
// backward's, their frames), which runs right after a kernel streamed the caches out and so
// costs several times what it costs warm: about 0.1 ms of a 0.6-0.7 ms tutorial-size
// forward+backward (bench/overhead.py).
//
// Python (run_lif, run_family) checks every argument first, as for the Python Functions, and
// sends here only what this covers: float32/float64 CPU input, parameters as floats or
// contiguous tensors of 1 or L values in x's dtype (clamped, or one value host-clamped with its
// raw tensor for the gradient), torch.compile not tracing. Built only when torch's headers are
// there at build time (setup.py); otherwise the Python Functions serve every call.
#include <torch/extension.h>

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "families.h"
#include "lif.h"
#include "module.h"
#include "pool.h"

namespace fastlif {
namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// What a call is, besides its tensors.
struct LifCall {
  int64_t steps = 1;
  int reset = 0;
  bool immediate = false;
  int sg = 0;
  double sg_param = 0;
  int threads = 1;
  int64_t pool_min_bytes = -1;   // outputs of at least this many bytes come from the pool; < 0: none do
  std::array<double, 3> values;  // each parameter given as a float (its tensor undefined)
  int64_t beta_inside = 1;       // a beta clamped in the Function: see clamp_forward
  bool edges_pass = false;

  // As the autograd context keeps it (its saved_data holds IValues; every field fits a double).
  std::vector<double> pack() const {
    return {double(steps), double(reset), double(immediate), double(sg), sg_param, double(threads),
            double(pool_min_bytes), values[0], values[1], values[2], double(beta_inside), double(edges_pass)};
  }
  static LifCall unpack(const std::vector<double>& v) {
    LifCall c;
    c.steps = int64_t(v[0]);
    c.reset = int(v[1]);
    c.immediate = v[2] != 0;
    c.sg = int(v[3]);
    c.sg_param = v[4];
    c.threads = int(v[5]);
    c.pool_min_bytes = int64_t(v[6]);
    c.values = {v[7], v[8], v[9]};
    c.beta_inside = int64_t(v[10]);
    c.edges_pass = v[11] != 0;
    return c;
  }
};

enum Input { kX, kMem0, kBeta, kThr, kGraded, kBetaRaw, kCall, kInputs };

// An uninitialised CPU output: from the pool when large enough (as fastlif.ops.common.cpu_empty).
Tensor output(at::IntArrayRef shape, at::ScalarType dtype, int64_t pool_min_bytes) {
  const auto options = torch::TensorOptions().dtype(dtype);
  int64_t n = 1;
  for (auto s : shape) n *= s;
  const int64_t bytes = n * int64_t(c10::elementSize(dtype));
  if (pool_min_bytes < 0 || bytes < pool_min_bytes || bytes == 0) return torch::empty(shape, options);
  auto block = std::make_unique<PoolBlock>(static_cast<std::size_t>(bytes));
  void* data = block->ptr;
  PoolBlock* owner = block.release();
  return torch::from_blob(data, shape, [owner](void*) { delete owner; }, options);
}

Tensor given(const std::optional<Tensor>& t) { return t.has_value() ? *t : Tensor(); }

std::uintptr_t pointer(const Tensor& t) {
  return t.defined() ? reinterpret_cast<std::uintptr_t>(t.data_ptr()) : 0;
}


int dtype_code(at::ScalarType t) {
  if (t == at::kFloat) return kFloat32;
  if (t == at::kDouble) return kFloat64;
  throw std::invalid_argument(std::string("fastlif: float32 or float64 input expected, got ") + c10::toString(t));
}

// A learnable parameter clamped to [0, 1] inside the Function (fastlif.ops.common.clamp_in_function):
// one value is clamped on the host by Python, which says whether its gradient passes (inside 1
// or 0); a tensor of more values (inside kByValue) is clamped here, and its gradient masked by
// its values as torch's clamp backward masks it (edges_pass: whether this torch passes it at
// the bounds themselves, fastlif.ops.common._clamp_edges_pass).
constexpr int64_t kByValue = -1;

Tensor clamp_forward(const Tensor& raw, int64_t inside) {
  return (raw.defined() && inside == kByValue) ? raw.clamp(0, 1).contiguous() : Tensor();
}

Tensor clamp_backward(const Tensor& grad, const Tensor& raw, int64_t inside, bool edges_pass) {
  if (!grad.defined() || inside == 1) return grad;
  if (inside == 0) return torch::zeros_like(grad);
  const Tensor mask = edges_pass ? raw.ge(0).logical_and(raw.le(1)) : raw.gt(0).logical_and(raw.lt(1));
  return torch::where(mask, grad, 0);
}

// (T, R, L): the kernels' view of a tensor holding `steps` steps (fastlif.layout.grid).
std::array<int64_t, 3> grid_of(const Tensor& t, int64_t steps) {
  const int64_t L = t.dim() ? t.size(-1) : 1;
  return {steps, (steps && L) ? t.numel() / (steps * L) : 0, L};
}

// A parameter as the kernels take it: (pointer, count, value).
std::tuple<std::uintptr_t, int64_t, double> param_tuple(const Tensor& t, double value) {
  return {pointer(t), t.defined() ? t.numel() : 1, t.defined() ? 0.0 : value};
}

}  // namespace

// Its node in the graph is torch::autograd::CppNode<fastlif::LeakyFunction>.
struct LeakyFunction : public torch::autograd::Function<LeakyFunction> {
  // The optional tensors come as std::optional: an absent one is no input of the graph (an
  // undefined Tensor would be taken for one), so that the edges of those present are numbered
  // without it (needs_input_grad takes an edge's number).
  static variable_list forward(AutogradContext* ctx, const Tensor& x, const std::optional<Tensor>& mem0_in,
                               const std::optional<Tensor>& beta_in, const std::optional<Tensor>& thr_in,
                               const std::optional<Tensor>& graded_in, const std::optional<Tensor>& beta_raw_in,
                               LifCall call) {
    const Tensor mem0 = given(mem0_in), beta = given(beta_in), thr = given(thr_in), graded = given(graded_in);
    const Tensor beta_raw = given(beta_raw_in);
    const Tensor beta_clamped = clamp_forward(beta_raw, call.beta_inside);
    const Tensor& beta_used = beta_clamped.defined() ? beta_clamped : beta;
    const int dtype = dtype_code(x.scalar_type());
    const Tensor xc = x.contiguous();
    const auto [T, R, L] = grid_of(xc, call.steps);
    Tensor spk = output(xc.sizes(), xc.scalar_type(), call.pool_min_bytes);
    Tensor mem = output(xc.sizes(), xc.scalar_type(), call.pool_min_bytes);
    Tensor u, flags;
    if (call.immediate) {
      u = output(xc.sizes(), xc.scalar_type(), call.pool_min_bytes);
      flags = output(xc.sizes(), at::kByte, call.pool_min_bytes);
    }
    const ParamTuples params = {param_tuple(beta_used, call.values[0]), param_tuple(thr, call.values[1]),
                                param_tuple(graded, call.values[2])};
    {
      pybind11::gil_scoped_release release;  // called from Python (the binding below)
      lif_fwd(dtype, T, R, L, pointer(xc), pointer(mem0), params, pointer(spk), pointer(mem), pointer(u),
              pointer(flags), call.reset, call.immediate, call.threads);
    }
    // What LifFunction saves: the membrane (delayed reset) or u and the flags (immediate reset)
    ctx->save_for_backward(
        {call.immediate ? Tensor() : mem, u, flags, mem0, beta, thr, graded, beta_raw, beta_clamped});
    ctx->saved_data["call"] = call.pack();
    ctx->set_materialize_grads(false);
    return {spk, mem};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list out(kInputs);
    Tensor grad_spk = grads[0], grad_mem = grads[1];
    if (!grad_spk.defined() && !grad_mem.defined()) return out;
    const LifCall call = LifCall::unpack(ctx->saved_data["call"].toDoubleVector());
    const auto saved = ctx->get_saved_variables();
    const Tensor &mem = saved[0], &u = saved[1], &flags = saved[2], &mem0 = saved[3];
    const Tensor &beta = saved[4], &thr = saved[5], &graded = saved[6], &beta_raw = saved[7];
    const Tensor& beta_used = saved[8].defined() ? saved[8] : beta;
    const Tensor& ref = call.immediate ? u : mem;
    const Tensor& x_like = ref;  // x is always an input
    const auto [T, R, L] = grid_of(ref, call.steps);
    if (grad_spk.defined()) grad_spk = grad_spk.to(ref.scalar_type()).contiguous();
    if (grad_mem.defined()) grad_mem = grad_mem.to(ref.scalar_type()).contiguous();
    Tensor grad_x = output(ref.sizes(), ref.scalar_type(), call.pool_min_bytes);
    // whether input k asks for a gradient (edges are numbered over the tensors given)
    const Tensor* inputs[kCall] = {&x_like, &mem0, &beta, &thr, &graded, &beta_raw};
    const auto wants = [&](int k) {
      if (!inputs[k]->defined()) return false;
      int edge = 0;
      for (int i = 0; i < k; ++i) edge += inputs[i]->defined();
      return ctx->needs_input_grad(edge);
    };
    Tensor grad_mem0 = wants(kMem0) ? torch::empty_like(mem0) : Tensor();
    // a gradient buffer for each parameter that asks for one; a host-clamped beta's goes to its
    // raw tensor
    Tensor gparams[3];
    for (int k = 0; k < 3; ++k)
      if (wants(kBeta + k)) gparams[k] = torch::empty_like(*inputs[kBeta + k]);
    if (wants(kBetaRaw)) gparams[0] = torch::empty_like(beta_raw);
    const ParamTuples params = {param_tuple(beta_used, call.values[0]), param_tuple(thr, call.values[1]),
                                param_tuple(graded, call.values[2])};
    lif_bwd(dtype_code(ref.scalar_type()), T, R, L, pointer(grad_spk), pointer(grad_mem), pointer(mem), pointer(u),
            pointer(flags), pointer(mem0), params, pointer(grad_x), pointer(grad_mem0),
            {pointer(gparams[0]), pointer(gparams[1]), pointer(gparams[2])}, call.reset, call.immediate, call.sg,
            call.sg_param, call.threads);
    out[kX] = grad_x;
    out[kMem0] = grad_mem0;
    if (beta_raw.defined()) {
      out[kBetaRaw] = clamp_backward(gparams[0], beta_raw, call.beta_inside, call.edges_pass);
    } else {
      out[kBeta] = gparams[0];
    }
    out[kThr] = gparams[1];
    out[kGraded] = gparams[2];
    return out;
  }
};


namespace {

// --- every spec'd family ---------------------------------------------------------------------------

// A spec'd family's call, besides its tensors: which of them fills each slot (an index into the
// tensor list, -1: absent) and what fastlif.spec.Family says of the family.
struct FamilyCall {
  std::string name;
  int64_t steps = 1;
  std::vector<int> options;
  int sg = 0;
  double sg_param = 0;
  int threads = 1;
  int64_t pool_min_bytes = -1;
  bool spike_state = false;  // state 0 is the spike output
  bool needs_x = true;       // backward reads x
  std::vector<int64_t> state0_slot, param_slot, raw_slot;
  std::vector<double> values;  // each parameter given as a float
  std::vector<int64_t> inside;  // a parameter clamped in the Function: see clamp_forward
  bool edges_pass = false;
  std::vector<int64_t> keep;    // whether forward keeps each state's sequence (Family.backward_reads)

  // As the autograd context keeps it: saved_data holds IValues.
  void save(AutogradContext* ctx) const {
    ctx->saved_data["name"] = name;
    std::vector<int64_t> ints = {steps, sg, threads, pool_min_bytes, spike_state, needs_x, edges_pass,
                                 int64_t(state0_slot.size()), int64_t(param_slot.size())};
    for (const auto* v : {&state0_slot, &param_slot, &raw_slot, &inside, &keep}) ints.insert(ints.end(), v->begin(), v->end());
    ints.insert(ints.end(), options.begin(), options.end());
    ctx->saved_data["ints"] = ints;
    std::vector<double> doubles = values;
    doubles.push_back(sg_param);
    ctx->saved_data["doubles"] = doubles;
  }
  static FamilyCall load(AutogradContext* ctx) {
    FamilyCall c;
    c.name = ctx->saved_data["name"].toStringRef();
    const auto ints = ctx->saved_data["ints"].toIntVector();
    c.steps = ints[0];
    c.sg = int(ints[1]);
    c.threads = int(ints[2]);
    c.pool_min_bytes = ints[3];
    c.spike_state = ints[4] != 0;
    c.needs_x = ints[5] != 0;
    c.edges_pass = ints[6] != 0;
    const int64_t ns = ints[7], np = ints[8];
    auto at = ints.begin() + 9;
    const auto take = [&](int64_t n) {
      std::vector<int64_t> v(at, at + n);
      at += n;
      return v;
    };
    c.state0_slot = take(ns);
    c.param_slot = take(np);
    c.raw_slot = take(np);
    c.inside = take(np);
    c.keep = take(ns);
    c.options.assign(at, ints.end());
    c.values = ctx->saved_data["doubles"].toDoubleVector();
    c.sg_param = c.values.back();
    c.values.pop_back();
    return c;
  }
};

}  // namespace

// Its node in the graph is torch::autograd::CppNode<fastlif::SpecFamilyFunction>. The optional
// tensors (initial states, tensor parameters, raw host-clamped parameters) come as one list of
// those present, each an input of the graph in that order; FamilyCall says which slot each fills.
struct SpecFamilyFunction : public torch::autograd::Function<SpecFamilyFunction> {
  static variable_list forward(AutogradContext* ctx, const Tensor& x, at::TensorList given_tensors,
                               const FamilyCall& call) {
    const auto slot = [&](int64_t i) { return i >= 0 ? given_tensors[i] : Tensor(); };
    const int ns = int(call.state0_slot.size()), np = int(call.param_slot.size());
    const int dtype = dtype_code(x.scalar_type());
    const Tensor xc = x.contiguous();
    const auto [T, R, L] = grid_of(xc, call.steps);
    const Tensor spk = output(xc.sizes(), xc.scalar_type(), call.pool_min_bytes);
    std::vector<Tensor> states(ns);
    Pointers state0, state_out;
    for (int k = 0; k < ns; ++k) {
      states[k] = (call.spike_state && k == 0) ? spk : output(xc.sizes(), xc.scalar_type(), call.pool_min_bytes);
      state0.push_back(pointer(slot(call.state0_slot[k])));
      state_out.push_back(pointer(states[k]));
    }
    ParamTuples params;
    std::vector<Tensor> used(np);  // each parameter as the kernels read it
    for (int k = 0; k < np; ++k) {
      const Tensor clamped = clamp_forward(slot(call.raw_slot[k]), call.inside[k]);
      used[k] = clamped.defined() ? clamped : slot(call.param_slot[k]);
      params.push_back(param_tuple(used[k], call.values[k]));
    }
    {
      pybind11::gil_scoped_release release;  // called from Python (the binding below)
      family_forward(call.name, dtype, T, R, L, pointer(xc), state0, params, pointer(spk), state_out, call.options,
                     call.threads);
    }
    // What FamilyFunction saves: x if backward reads it, the initial states, the states' sequences
    // backward reads, the tensor parameters and the raw host-clamped ones
    variable_list saved = {call.needs_x ? xc : Tensor()};
    for (int k = 0; k < ns; ++k) saved.push_back(slot(call.state0_slot[k]));
    for (int k = 0; k < ns; ++k) saved.push_back(call.keep[k] ? states[k] : Tensor());
    for (int k = 0; k < np; ++k) saved.push_back(used[k]);
    for (int k = 0; k < np; ++k) saved.push_back(slot(call.raw_slot[k]));
    ctx->save_for_backward(saved);
    call.save(ctx);
    ctx->saved_data["inputs"] = int64_t(given_tensors.size());
    ctx->set_materialize_grads(false);
    variable_list out = {spk};
    for (int k = call.spike_state ? 1 : 0; k < ns; ++k) out.push_back(states[k]);
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list out(2 + ctx->saved_data["inputs"].toInt());  // x, the tensor list, the call
    bool any = false;
    for (const auto& g : grads) any = any || g.defined();
    if (!any) return out;
    const FamilyCall call = FamilyCall::load(ctx);
    const int ns = int(call.state0_slot.size()), np = int(call.param_slot.size());
    const auto saved = ctx->get_saved_variables();
    const Tensor& x = saved[0];
    const auto state0 = [&](int k) -> const Tensor& { return saved[1 + k]; };
    const auto state = [&](int k) -> const Tensor& { return saved[1 + ns + k]; };
    const auto param = [&](int k) -> const Tensor& { return saved[1 + 2 * ns + k]; };
    const auto raw = [&](int k) -> const Tensor& { return saved[1 + 2 * ns + np + k]; };
    const auto wants = [&](int64_t slot) { return slot >= 0 && ctx->needs_input_grad(1 + slot); };
    const Tensor* ref = nullptr;  // a state forward kept: x's shape in the compute dtype
    for (int k = 0; k < ns && !ref; ++k)
      if (state(k).defined()) ref = &state(k);
    const auto [T, R, L] = grid_of(*ref, call.steps);
    const auto compute = ref->scalar_type();
    const auto as_compute = [&](const Tensor& g) { return g.defined() ? g.to(compute).contiguous() : g; };
    const Tensor grad_spk = as_compute(grads[0]);
    std::vector<Tensor> grad_states(ns), grad_state0(ns), grad_params(np);
    for (int k = 0; k < ns; ++k) {
      if (!(call.spike_state && k == 0)) grad_states[k] = as_compute(grads[call.spike_state ? k : k + 1]);
      if (wants(call.state0_slot[k])) grad_state0[k] = torch::empty_like(state0(k));
    }
    for (int k = 0; k < np; ++k) {  // a host-clamped parameter's gradient goes to its raw tensor
      if (wants(call.param_slot[k])) grad_params[k] = torch::empty_like(param(k));
      if (wants(call.raw_slot[k])) grad_params[k] = torch::empty_like(raw(k));
    }
    const Tensor grad_x = output(ref->sizes(), compute, call.pool_min_bytes);
    Pointers gs, s0, st, gs0, gp;
    ParamTuples params;
    for (int k = 0; k < ns; ++k) {
      gs.push_back(pointer(grad_states[k]));
      s0.push_back(pointer(state0(k)));
      st.push_back(pointer(state(k)));
      gs0.push_back(pointer(grad_state0[k]));
    }
    for (int k = 0; k < np; ++k) {
      params.push_back(param_tuple(param(k), call.values[k]));
      gp.push_back(pointer(grad_params[k]));
    }
    family_backward(call.name, dtype_code(compute), T, R, L, pointer(grad_spk), gs, call.needs_x ? pointer(x) : 0,
                    s0, st, params, pointer(grad_x), gs0, gp, call.options, call.sg, call.sg_param, call.threads);
    out[0] = grad_x;
    for (int k = 0; k < ns; ++k)
      if (call.state0_slot[k] >= 0) out[1 + call.state0_slot[k]] = grad_state0[k];
    for (int k = 0; k < np; ++k) {
      if (call.param_slot[k] >= 0) out[1 + call.param_slot[k]] = grad_params[k];
      if (call.raw_slot[k] >= 0)
        out[1 + call.raw_slot[k]] = clamp_backward(grad_params[k], raw(k), call.inside[k], call.edges_pass);
    }
    return out;
  }
};

namespace {

void register_autograd(pybind11::module_& m) {
  namespace py = pybind11;
  m.def(
      "family_train",
      [](const std::string& family, const Tensor& x, const std::vector<std::optional<Tensor>>& state0,
         const std::vector<std::optional<Tensor>>& params, const std::vector<double>& values,
         const std::vector<std::optional<Tensor>>& raws, const std::vector<int64_t>& inside, bool clamp_edges_pass,
         const std::vector<bool>& keep, bool spike_state, bool needs_x, int64_t steps, const std::vector<int>& options,
         int surrogate_kind, double surrogate_param, int num_threads, int64_t pool_min_bytes) {
        const size_t ns = state0.size(), np = params.size();
        if (values.size() != np || raws.size() != np || inside.size() != np || keep.size() != ns)
          throw std::invalid_argument("family_train: " + family + ": one value, raw and inside flag per parameter "
                                      "and one keep flag per state expected");
        FamilyCall call{.name = family, .steps = steps, .options = options, .sg = surrogate_kind,
                        .sg_param = surrogate_param, .threads = num_threads, .pool_min_bytes = pool_min_bytes,
                        .spike_state = spike_state, .needs_x = needs_x, .values = values, .inside = inside,
                        .edges_pass = clamp_edges_pass, .keep = {keep.begin(), keep.end()}};
        std::vector<Tensor> tensors;
        const auto place = [&](const std::vector<std::optional<Tensor>>& from, std::vector<int64_t>& slots) {
          for (const auto& t : from) {
            slots.push_back(t.has_value() ? int64_t(tensors.size()) : -1);
            if (t.has_value()) tensors.push_back(*t);
          }
        };
        place(state0, call.state0_slot);
        place(params, call.param_slot);
        place(raws, call.raw_slot);
        const auto outs = SpecFamilyFunction::apply(x, at::TensorList(tensors), call);
        py::tuple result(outs.size());
        for (size_t i = 0; i < outs.size(); ++i) result[i] = py::cast(outs[i]);
        return result;
      },
      "a spec'd family over T steps with its backward recorded as one C++ autograd node (see "
      "fastlif/family.py, run_family): (spk, *states returned)",
      py::arg("family"), py::arg("x"), py::arg("state0"), py::arg("params"), py::arg("values"), py::arg("raws"),
      py::arg("inside"), py::arg("clamp_edges_pass"), py::arg("keep"), py::arg("spike_state"), py::arg("needs_x"), py::arg("steps"),
      py::arg("options"), py::arg("surrogate_kind"), py::arg("surrogate_param"), py::arg("num_threads"),
      py::arg("pool_min_bytes"));
  m.def(
      "lif_train",
      [](const Tensor& x, const std::optional<Tensor>& mem0, const std::optional<Tensor>& beta,
         const std::optional<Tensor>& threshold, const std::optional<Tensor>& graded,
         const std::vector<double>& values, const std::optional<Tensor>& beta_raw, int64_t beta_inside,
         bool clamp_edges_pass, int64_t steps, int reset_mode, bool immediate, int surrogate_kind,
         double surrogate_param, int num_threads, int64_t pool_min_bytes) {
        if (values.size() != 3)
          throw std::invalid_argument("lif_train: expected 3 parameter values, got " + std::to_string(values.size()));
        const LifCall call{.steps = steps, .reset = reset_mode, .immediate = immediate && reset_mode != kNone,
                           .sg = surrogate_kind, .sg_param = surrogate_param, .threads = num_threads,
                           .pool_min_bytes = pool_min_bytes, .values = {values[0], values[1], values[2]},
                           .beta_inside = beta_inside, .edges_pass = clamp_edges_pass};
        auto outs = LeakyFunction::apply(x, mem0, beta, threshold, graded, beta_raw, call);
        return py::make_tuple(outs[0], outs[1]);
      },
      "Leaky over T steps with its backward recorded as one C++ autograd node (see fastlif/ops/lif.py, "
      "run_lif): (spk, mem)",
      py::arg("x"), py::arg("mem0"), py::arg("beta"), py::arg("threshold"), py::arg("graded"), py::arg("values"),
      py::arg("beta_raw"), py::arg("beta_inside"), py::arg("clamp_edges_pass"), py::arg("steps"), py::arg("reset_mode"), py::arg("immediate"),
      py::arg("surrogate_kind"), py::arg("surrogate_param"), py::arg("num_threads"), py::arg("pool_min_bytes"));
}

}  // namespace

FASTLIF_REGISTER(register_autograd);

}  // namespace fastlif
