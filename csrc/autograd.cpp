// The fused ops' autograd Function in C++ (libtorch), for the eager calls on the C++ backend:
// one node, FusedFunction, for Leaky (csrc/lif.cpp's kernels, standing in for LifFunction in
// fastlif/ops/lif.py), the one-to-one RLeaky (csrc/rleaky.cpp's, for RLeakyFunction in
// fastlif/ops/rleaky.py) and every spec'd family (csrc/scan.h's, for FamilyFunction in
// fastlif/family.py). The same kernels, outputs, saved tensors and gradients as the Python
// Functions, bit for bit, with no Python between the kernels. What that saves: the interpreter's
// share of a call (Function.apply's Python, the backward's, their frames), which runs right after
// a kernel streamed the caches out and so costs several times what it costs warm: 10-27 % of a
// tutorial-size forward+backward (bench/overhead.py).
//
// Python (fastlif.ops.common.cpp_autograd, called by run_lif, run_rleaky and run_family)
// checks every argument first, as for the Python Functions, and sends here only what this
// covers: float32/float64 CPU input, parameters as floats or contiguous tensors of 1 or L values
// in x's dtype, torch.compile not tracing. Built only when torch's headers are there at build
// time (setup.py); otherwise the Python Functions serve every call.
#include <torch/extension.h>

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "entry_points.h"
#include "module.h"
#include "pool.h"

namespace fastlif {
namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Which kernels a call runs. Leaky and RLeaky keep a membrane (delayed reset) or the pre-reset
// membrane and the reset flags (immediate reset) for backward; a spec'd family its state
// sequences (those its backward reads) and x (if it reads it).
enum Kind : int64_t { kLeaky = 0, kRLeaky = 1, kFamily = 2 };

// A call, besides its tensors: which of them fills each slot (an index into the tensor list,
// -1: absent), and what the kernels are told.
struct Call {
  int64_t kind = kLeaky;
  std::string family;          // kFamily: the spec's name
  int64_t steps = 1;
  std::vector<int> options;    // Leaky, RLeaky: reset mode, immediate; a family: its spec's options
  int64_t sg = 0;
  double sg_param = 0;
  int64_t threads = 1;
  int64_t pool_min_bytes = -1;  // outputs of at least this many bytes come from the pool; < 0: none do
  bool spike_state = false;     // kFamily: state 0 is the spike output
  bool needs_x = false;         // kFamily: backward reads x
  bool edges_pass = false;      // see clamp_backward
  std::vector<int64_t> state0_slot, param_slot, raw_slot;
  std::vector<double> values;   // each parameter given as a float
  std::vector<int64_t> inside;  // a parameter clamped in the Function: see clamp_forward
  std::vector<int64_t> keep;    // kFamily: whether forward keeps each state's sequence (Family.backward_reads)

  int states() const { return int(state0_slot.size()); }
  int params() const { return int(param_slot.size()); }
  bool immediate() const { return kind != kFamily && options[1] != 0; }

  // As the autograd context keeps it: saved_data holds IValues.
  void save(AutogradContext* ctx) const {
    ctx->saved_data["family"] = family;
    std::vector<int64_t> ints = {kind, steps, sg, threads, pool_min_bytes, spike_state, needs_x, edges_pass,
                                 states(), params()};
    for (const auto* v : {&state0_slot, &param_slot, &raw_slot, &inside, &keep})
      ints.insert(ints.end(), v->begin(), v->end());
    ints.insert(ints.end(), options.begin(), options.end());
    ctx->saved_data["ints"] = ints;
    std::vector<double> doubles = values;
    doubles.push_back(sg_param);
    ctx->saved_data["doubles"] = doubles;
  }
  static Call load(AutogradContext* ctx) {
    Call c;
    c.family = ctx->saved_data["family"].toStringRef();
    const auto ints = ctx->saved_data["ints"].toIntVector();
    c.kind = ints[0];
    c.steps = ints[1];
    c.sg = ints[2];
    c.threads = ints[3];
    c.pool_min_bytes = ints[4];
    c.spike_state = ints[5] != 0;
    c.needs_x = ints[6] != 0;
    c.edges_pass = ints[7] != 0;
    const int64_t ns = ints[8], np = ints[9];
    auto at = ints.begin() + 10;
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

std::uintptr_t pointer(const Tensor& t) { return t.defined() ? reinterpret_cast<std::uintptr_t>(t.data_ptr()) : 0; }

int dtype_code(at::ScalarType t) {
  if (t == at::kFloat) return kFloat32;
  if (t == at::kDouble) return kFloat64;
  throw std::invalid_argument(std::string("fastlif: float32 or float64 input expected, got ") + c10::toString(t));
}

// (T, R, L): the kernels' view of a tensor holding `steps` steps (fastlif.layout.grid).
std::array<int64_t, 3> grid_of(const Tensor& t, int64_t steps) {
  const int64_t L = t.dim() ? t.size(-1) : 1;
  return {steps, (steps && L) ? t.numel() / (steps * L) : 0, L};
}

// A learnable parameter clamped to [0, 1] inside the Function (fastlif.ops.common.clamp_inside):
// one value is clamped on the host by Python, which says whether its gradient passes (inside 1
// or 0); a tensor of more values (inside kByValue) is clamped here, and its gradient masked by
// its values as torch's clamp backward masks it (edges_pass: whether this torch passes it at
// the bounds themselves, fastlif.ops.common.CLAMP_EDGES_PASS).
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

ParamTuples param_tuples(const std::vector<Tensor>& params, const Call& call) {
  ParamTuples out;
  for (int k = 0; k < call.params(); ++k) {
    const Tensor& t = params[k];
    out.emplace_back(pointer(t), t.defined() ? t.numel() : 1, t.defined() ? 0.0 : call.values[k]);
  }
  return out;
}

Pointers pointers(const std::vector<Tensor>& ts) {
  Pointers out;
  for (const auto& t : ts) out.push_back(pointer(t));
  return out;
}

}  // namespace

// Its node in the graph is torch::autograd::CppNode<fastlif::FusedFunction>. The optional
// tensors (initial states, tensor parameters, raw clamped parameters) come as one list of those
// present, each an input of the graph in that order (needs_input_grad numbers them so); the
// call says which slot each fills. Saved for backward, in this order: what the kernels kept
// (Leaky, RLeaky: the membrane, or u and the flags; a family: x and its kept state sequences),
// the initial states, the parameters as the kernels read them, the raw clamped parameters.
struct FusedFunction : public torch::autograd::Function<FusedFunction> {
  static variable_list forward(AutogradContext* ctx, const Tensor& x, at::TensorList given, const Call& call) {
    const auto slot = [&](int64_t i) { return i >= 0 ? given[i] : Tensor(); };
    const int ns = call.states(), np = call.params();
    std::vector<Tensor> state0(ns), params(np);
    for (int k = 0; k < ns; ++k) state0[k] = slot(call.state0_slot[k]);
    for (int k = 0; k < np; ++k) {
      const Tensor clamped = clamp_forward(slot(call.raw_slot[k]), call.inside[k]);
      params[k] = clamped.defined() ? clamped : slot(call.param_slot[k]);
    }
    const int dtype = dtype_code(x.scalar_type());
    const Tensor xc = x.contiguous();
    const auto [T, R, L] = grid_of(xc, call.steps);
    const auto new_output = [&](at::ScalarType t) { return output(xc.sizes(), t, call.pool_min_bytes); };
    const ParamTuples ptuples = param_tuples(params, call);
    const Tensor spk = new_output(xc.scalar_type());
    variable_list returned = {spk}, kept;
    if (call.kind == kFamily) {
      std::vector<Tensor> states(ns);
      for (int k = 0; k < ns; ++k) states[k] = (call.spike_state && k == 0) ? spk : new_output(xc.scalar_type());
      {
        pybind11::gil_scoped_release release;  // called from Python (the binding below)
        family_forward(call.family, dtype, T, R, L, pointer(xc), pointers(state0), ptuples, pointer(spk),
                       pointers(states), call.options, int(call.threads));
      }
      kept.push_back(call.needs_x ? xc : Tensor());
      for (int k = 0; k < ns; ++k) kept.push_back(call.keep[k] ? states[k] : Tensor());
      for (int k = call.spike_state ? 1 : 0; k < ns; ++k) returned.push_back(states[k]);
    } else {
      const bool immediate = call.immediate();
      const Tensor mem = new_output(xc.scalar_type());
      const Tensor u = immediate ? new_output(xc.scalar_type()) : Tensor();
      const Tensor flags = immediate ? new_output(at::kByte) : Tensor();
      {
        pybind11::gil_scoped_release release;
        if (call.kind == kLeaky)
          lif_fwd(dtype, T, R, L, pointer(xc), pointer(state0[0]), ptuples, pointer(spk), pointer(mem), pointer(u),
                  pointer(flags), call.options[0], immediate, int(call.threads));
        else
          rleaky_fwd(dtype, T, R, L, pointer(xc), pointer(state0[0]), pointer(state0[1]), ptuples, 0, 0,
                     pointer(spk), pointer(mem), pointer(u), pointer(flags), call.options[0], immediate,
                     int(call.threads));
      }
      kept = {immediate ? Tensor() : mem, u, flags};
      returned.push_back(mem);
    }
    variable_list saved = kept;
    saved.insert(saved.end(), state0.begin(), state0.end());
    saved.insert(saved.end(), params.begin(), params.end());
    for (int k = 0; k < np; ++k) saved.push_back(slot(call.raw_slot[k]));
    ctx->save_for_backward(saved);
    call.save(ctx);
    ctx->saved_data["given"] = int64_t(given.size());
    ctx->set_materialize_grads(false);
    return returned;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list out(2 + ctx->saved_data["given"].toInt());  // x, the tensor list, the call
    bool any = false;
    for (const auto& g : grads) any = any || g.defined();
    if (!any) return out;
    const Call call = Call::load(ctx);
    const int ns = call.states(), np = call.params();
    const auto saved = ctx->get_saved_variables();
    const size_t n_kept = call.kind == kFamily ? size_t(1 + ns) : 3;
    const variable_list kept(saved.begin(), saved.begin() + n_kept);
    const std::vector<Tensor> state0(saved.begin() + n_kept, saved.begin() + n_kept + ns);
    const std::vector<Tensor> params(saved.begin() + n_kept + ns, saved.begin() + n_kept + ns + np);
    const std::vector<Tensor> raws(saved.begin() + n_kept + ns + np, saved.end());
    const auto wants = [&](int64_t slot) { return slot >= 0 && ctx->needs_input_grad(1 + slot); };
    // a tensor of x's shape in the compute dtype: the membrane, u, or a kept state
    Tensor ref;
    for (size_t i = call.kind == kFamily ? 1 : 0; i < kept.size() && !ref.defined(); ++i)
      if (kept[i].defined() && kept[i].scalar_type() != at::kByte) ref = kept[i];
    const auto [T, R, L] = grid_of(ref, call.steps);
    const auto compute = ref.scalar_type();
    const auto as_compute = [&](const Tensor& g) { return g.defined() ? g.to(compute).contiguous() : g; };
    std::vector<Tensor> grad_state0(ns), grad_params(np);
    for (int k = 0; k < ns; ++k)
      if (wants(call.state0_slot[k])) grad_state0[k] = torch::empty_like(state0[k]);
    for (int k = 0; k < np; ++k) {  // a raw clamped parameter's gradient comes through its clamp
      if (wants(call.param_slot[k])) grad_params[k] = torch::empty_like(params[k]);
      if (wants(call.raw_slot[k])) grad_params[k] = torch::empty_like(raws[k]);
    }
    const Tensor grad_x = output(ref.sizes(), compute, call.pool_min_bytes);
    const ParamTuples ptuples = param_tuples(params, call);
    const Tensor grad_spk = as_compute(grads[0]);
    if (call.kind == kFamily) {
      std::vector<Tensor> grad_states(ns);
      for (int k = call.spike_state ? 1 : 0; k < ns; ++k) grad_states[k] = as_compute(grads[call.spike_state ? k : k + 1]);
      family_backward(call.family, dtype_code(compute), T, R, L, pointer(grad_spk), pointers(grad_states),
                      pointer(kept[0]), pointers(state0), pointers(std::vector<Tensor>(kept.begin() + 1, kept.end())), ptuples,
                      pointer(grad_x), pointers(grad_state0), pointers(grad_params), call.options, int(call.sg),
                      call.sg_param, int(call.threads));
    } else {
      const Tensor grad_mem = as_compute(grads[1]);
      const Tensor &mem = kept[0], &u = kept[1], &flags = kept[2];
      if (call.kind == kLeaky)
        lif_bwd(dtype_code(compute), T, R, L, pointer(grad_spk), pointer(grad_mem), pointer(mem), pointer(u),
                pointer(flags), pointer(state0[0]), ptuples, pointer(grad_x), pointer(grad_state0[0]),
                pointers(grad_params), call.options[0], call.immediate(), int(call.sg), call.sg_param,
                int(call.threads));
      else
        rleaky_bwd(dtype_code(compute), T, R, L, pointer(grad_spk), pointer(grad_mem), pointer(mem), pointer(u),
                   pointer(flags), pointer(state0[0]), pointer(state0[1]), ptuples, 0, pointer(grad_x),
                   pointer(grad_state0[0]), pointer(grad_state0[1]), pointers(grad_params), call.options[0],
                   call.immediate(), int(call.sg), call.sg_param, int(call.threads));
    }
    out[0] = grad_x;
    for (int k = 0; k < ns; ++k)
      if (call.state0_slot[k] >= 0) out[1 + call.state0_slot[k]] = grad_state0[k];
    for (int k = 0; k < np; ++k) {
      if (call.param_slot[k] >= 0) out[1 + call.param_slot[k]] = grad_params[k];
      if (call.raw_slot[k] >= 0)
        out[1 + call.raw_slot[k]] = clamp_backward(grad_params[k], raws[k], call.inside[k], call.edges_pass);
    }
    return out;
  }
};

namespace {

void register_autograd(pybind11::module_& m) {
  namespace py = pybind11;
  m.def(
      "fused_train",
      [](int64_t kind, const std::string& family, const Tensor& x, const std::vector<std::optional<Tensor>>& state0,
         const std::vector<std::optional<Tensor>>& params, const std::vector<double>& values,
         const std::vector<std::optional<Tensor>>& raws, const std::vector<int64_t>& inside, bool clamp_edges_pass,
         const std::vector<bool>& keep, bool spike_state, bool needs_x, int64_t steps, const std::vector<int>& options,
         int surrogate_kind, double surrogate_param, int num_threads, int64_t pool_min_bytes) {
        const size_t ns = state0.size(), np = params.size();
        if (kind < kLeaky || kind > kFamily)
          throw std::invalid_argument("fused_train: unknown kind " + std::to_string(kind));
        if (values.size() != np || raws.size() != np || inside.size() != np || keep.size() != ns)
          throw std::invalid_argument("fused_train: one value, raw and inside flag per parameter and one keep flag "
                                      "per state expected");
        const size_t want_states = kind == kLeaky ? 1 : kind == kRLeaky ? 2 : ns;
        const size_t want_params = kind == kLeaky ? 3 : kind == kRLeaky ? 4 : np;
        if (ns != want_states || np != want_params || (kind != kFamily && options.size() != 2))
          throw std::invalid_argument("fused_train: wrong number of states, parameters or options for this kind");
        Call call{.kind = kind, .family = family, .steps = steps, .options = options, .sg = surrogate_kind,
                  .sg_param = surrogate_param, .threads = num_threads, .pool_min_bytes = pool_min_bytes,
                  .spike_state = spike_state, .needs_x = needs_x, .edges_pass = clamp_edges_pass,
                  .values = values, .inside = inside, .keep = {keep.begin(), keep.end()}};
        if (kind != kFamily) call.options[1] = call.options[1] && call.options[0] != kNone;
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
        const auto outs = FusedFunction::apply(x, at::TensorList(tensors), call);
        py::tuple result(outs.size());
        for (size_t i = 0; i < outs.size(); ++i) result[i] = py::cast(outs[i]);
        return result;
      },
      "A fused op over T steps with its backward recorded as one C++ autograd node "
      "(fastlif.ops.common.cpp_autograd): (spk, *states returned)",
      py::arg("kind"), py::arg("family"), py::arg("x"), py::arg("state0"), py::arg("params"), py::arg("values"),
      py::arg("raws"), py::arg("inside"), py::arg("clamp_edges_pass"), py::arg("keep"), py::arg("spike_state"),
      py::arg("needs_x"), py::arg("steps"), py::arg("options"), py::arg("surrogate_kind"),
      py::arg("surrogate_param"), py::arg("num_threads"), py::arg("pool_min_bytes"));
  m.attr("FUSED_KINDS") = py::dict(py::arg("leaky") = int64_t(kLeaky), py::arg("rleaky") = int64_t(kRLeaky),
                                   py::arg("family") = int64_t(kFamily));
}

}  // namespace

FASTLIF_REGISTER(register_autograd);

}  // namespace fastlif
