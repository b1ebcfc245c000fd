// pybind11 binding of the fused CPU LIF kernels (lif_kernel.h) as ``fastlif._C``.
//
// Python allocates every output as a torch tensor and passes NumPy views of it, so nothing is
// copied and the extension needs no torch headers. This layer checks every shape, dtype,
// contiguity and writability, turns the runtime options into template parameters, and
// releases the GIL while the kernel runs.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "lif_kernel.h"

namespace py = pybind11;
using fastlif::LifArgs;

namespace {

std::string shape_str(const py::array& a) {
  std::string s = "[";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + "]";
}

template <typename T>
void check(const py::array& a, const char* name, std::initializer_list<int64_t> shape, bool writable) {
  if (!py::isinstance<py::array_t<T>>(a) || !a.dtype().is(py::dtype::of<T>()))
    throw py::type_error(std::string(name) + ": expected dtype " +
                         std::string(py::str(py::dtype::of<T>())) + ", got " +
                         std::string(py::str(a.dtype())));
  if (a.ndim() != static_cast<py::ssize_t>(shape.size()))
    throw py::value_error(std::string(name) + ": expected " + std::to_string(shape.size()) +
                          " dimensions, got shape " + shape_str(a));
  int i = 0;
  for (int64_t d : shape) {
    if (d >= 0 && a.shape(i) != d)
      throw py::value_error(std::string(name) + ": shape " + shape_str(a) + " does not match the input");
    ++i;
  }
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(name) + ": must be C-contiguous");
  if (writable && !a.writeable()) throw py::value_error(std::string(name) + ": must be writable");
}

template <typename T>
const T* cptr(const py::object& o) {
  return o.is_none() ? nullptr : static_cast<const T*>(o.cast<py::array>().data());
}
template <typename T>
T* mptr(const py::object& o) {
  return o.is_none() ? nullptr : static_cast<T*>(o.cast<py::array>().mutable_data());
}

// Parameters arrive as [1] or [L]. If any is per-neuron, all are expanded to [L] so the kernel
// has one code path per case; `store` keeps the expanded copies alive.
template <typename T>
bool prepare_params(const py::array& beta, const py::array& thr, const py::array& graded, int64_t L,
                    std::vector<T> store[3], const T* out[3]) {
  const py::array* ps[3] = {&beta, &thr, &graded};
  const char* names[3] = {"beta", "threshold", "graded_spikes_factor"};
  bool per_neuron = false;
  for (int k = 0; k < 3; ++k) {
    check<T>(*ps[k], names[k], {-1}, false);
    const int64_t n = ps[k]->shape(0);
    if (n != 1 && n != L)
      throw py::value_error(std::string(names[k]) + ": expected 1 value or one per neuron along the " +
                            "last dimension (" + std::to_string(L) + "), got " + std::to_string(n));
    per_neuron |= (n == L && L != 1);
  }
  for (int k = 0; k < 3; ++k) {
    const T* src = static_cast<const T*>(ps[k]->data());
    if (per_neuron && ps[k]->shape(0) == 1 && L != 1) {
      store[k].assign(L, src[0]);
      out[k] = store[k].data();
    } else {
      out[k] = src;
    }
  }
  return per_neuron;
}

// With scalar parameters rows mean nothing to the kernel: treat [R, L] as one row of R*L
// neurons, so a small last dimension (a conv map's width, or 1) still gives long runs.
template <typename T>
void set_grid(LifArgs<T>& a, int64_t T_, int64_t R, int64_t L, bool per_neuron) {
  a.T = T_;
  a.R = per_neuron ? R : 1;
  a.L = per_neuron ? L : R * L;
}

template <typename T, int RESET, bool DELAY>
void dispatch_fwd_pn(const LifArgs<T>& a, bool per_neuron) {
  if (per_neuron) fastlif::lif_fwd_cpu<T, RESET, DELAY, true>(a);
  else fastlif::lif_fwd_cpu<T, RESET, DELAY, false>(a);
}

template <typename T>
void dispatch_fwd(const LifArgs<T>& a, int reset, bool delay, bool pn) {
  // With no reset the immediate-reset branch is a no-op: one instantiation serves both.
  if (reset == fastlif::kSubtract) delay ? dispatch_fwd_pn<T, 0, true>(a, pn) : dispatch_fwd_pn<T, 0, false>(a, pn);
  else if (reset == fastlif::kZero) delay ? dispatch_fwd_pn<T, 1, true>(a, pn) : dispatch_fwd_pn<T, 1, false>(a, pn);
  else dispatch_fwd_pn<T, 2, true>(a, pn);
}

template <typename T, int RESET, bool DELAY, bool PN>
void dispatch_bwd_sg(const LifArgs<T>& a, int sg) {
  switch (sg) {
    case fastlif::kAtan: return fastlif::lif_bwd_cpu<T, RESET, DELAY, PN, fastlif::kAtan>(a);
    case fastlif::kFastSigmoid: return fastlif::lif_bwd_cpu<T, RESET, DELAY, PN, fastlif::kFastSigmoid>(a);
    case fastlif::kSigmoid: return fastlif::lif_bwd_cpu<T, RESET, DELAY, PN, fastlif::kSigmoid>(a);
    case fastlif::kTriangular: return fastlif::lif_bwd_cpu<T, RESET, DELAY, PN, fastlif::kTriangular>(a);
    case fastlif::kStraightThrough: return fastlif::lif_bwd_cpu<T, RESET, DELAY, PN, fastlif::kStraightThrough>(a);
    default: return fastlif::lif_bwd_cpu<T, RESET, DELAY, PN, fastlif::kNoGrad>(a);
  }
}

template <typename T, int RESET, bool DELAY>
void dispatch_bwd_pn(const LifArgs<T>& a, bool pn, int sg) {
  pn ? dispatch_bwd_sg<T, RESET, DELAY, true>(a, sg) : dispatch_bwd_sg<T, RESET, DELAY, false>(a, sg);
}

template <typename T>
void dispatch_bwd(const LifArgs<T>& a, int reset, bool delay, bool pn, int sg) {
  if (reset == fastlif::kSubtract) delay ? dispatch_bwd_pn<T, 0, true>(a, pn, sg) : dispatch_bwd_pn<T, 0, false>(a, pn, sg);
  else if (reset == fastlif::kZero) delay ? dispatch_bwd_pn<T, 1, true>(a, pn, sg) : dispatch_bwd_pn<T, 1, false>(a, pn, sg);
  else dispatch_bwd_pn<T, 2, true>(a, pn, sg);
}

void check_options(int reset, int sg) {
  if (reset < 0 || reset > 2)
    throw py::value_error("reset_mode must be 0 (subtract), 1 (zero) or 2 (none), got " + std::to_string(reset));
  if (sg < 0 || sg > 5) throw py::value_error("unknown surrogate kind " + std::to_string(sg));
}

template <typename T>
void fwd_typed(const py::array& x, const py::object& mem0, const py::array& beta, const py::array& thr,
               const py::array& graded, const py::array& spk, const py::array& mem, const py::object& u_saved,
               const py::object& r_saved, int reset, bool delay, int num_threads) {
  check<T>(x, "x", {-1, -1, -1}, false);
  const int64_t T_ = x.shape(0), R = x.shape(1), L = x.shape(2);
  if (!mem0.is_none()) check<T>(mem0.cast<py::array>(), "mem0", {R * L}, false);
  check<T>(spk, "spk", {T_, R, L}, true);
  check<T>(mem, "mem", {T_, R, L}, true);
  const bool uses_delay = delay || reset == fastlif::kNone;
  if (!uses_delay) {
    if (u_saved.is_none() || r_saved.is_none())
      throw py::value_error("u_saved and r_saved are required when reset_delay is false");
    check<T>(u_saved.cast<py::array>(), "u_saved", {T_, R, L}, true);
    check<uint8_t>(r_saved.cast<py::array>(), "r_saved", {T_, R, L}, true);
  }
  check_options(reset, 0);
  std::vector<T> store[3];
  const T* params[3];
  const bool pn = prepare_params<T>(beta, thr, graded, L, store, params);
  LifArgs<T> a;
  set_grid(a, T_, R, L, pn);
  a.x = static_cast<const T*>(x.data());
  a.mem0 = cptr<T>(mem0);
  a.beta = params[0]; a.thr = params[1]; a.graded = params[2];
  a.spk = static_cast<T*>(spk.cast<py::array>().mutable_data());
  a.mem = static_cast<T*>(mem.cast<py::array>().mutable_data());
  if (!uses_delay) { a.u_saved = mptr<T>(u_saved); a.r_saved = mptr<uint8_t>(r_saved); }
  a.num_threads = num_threads > 0 ? num_threads : 1;
  py::gil_scoped_release release;
  dispatch_fwd<T>(a, reset, uses_delay, pn);
}

template <typename T>
void bwd_typed(const py::array& grad_spk, const py::array& grad_mem, const py::object& mem_saved,
               const py::object& u_saved, const py::object& r_saved, const py::object& mem0,
               const py::array& beta, const py::array& thr, const py::array& graded, const py::array& grad_x,
               const py::object& grad_mem0, const py::array& grad_beta, const py::array& grad_thr,
               const py::array& grad_graded, int reset, bool delay, int sg, double sg_param, int num_threads) {
  check<T>(grad_spk, "grad_spk", {-1, -1, -1}, false);
  const int64_t T_ = grad_spk.shape(0), R = grad_spk.shape(1), L = grad_spk.shape(2);
  check<T>(grad_mem, "grad_mem", {T_, R, L}, false);
  check<T>(grad_x, "grad_x", {T_, R, L}, true);
  const bool uses_delay = delay || reset == fastlif::kNone;
  if (uses_delay) {
    if (mem_saved.is_none()) throw py::value_error("mem_saved is required when reset_delay is true");
    check<T>(mem_saved.cast<py::array>(), "mem_saved", {T_, R, L}, false);
  } else {
    if (u_saved.is_none() || r_saved.is_none())
      throw py::value_error("u_saved and r_saved are required when reset_delay is false");
    check<T>(u_saved.cast<py::array>(), "u_saved", {T_, R, L}, false);
    check<uint8_t>(r_saved.cast<py::array>(), "r_saved", {T_, R, L}, false);
  }
  if (!mem0.is_none()) check<T>(mem0.cast<py::array>(), "mem0", {R * L}, false);
  if (!grad_mem0.is_none()) check<T>(grad_mem0.cast<py::array>(), "grad_mem0", {R * L}, true);
  check_options(reset, sg);
  std::vector<T> store[3];
  const T* params[3];
  const bool pn = prepare_params<T>(beta, thr, graded, L, store, params);
  const py::array* grads[3] = {&grad_beta, &grad_thr, &grad_graded};
  const py::array* ins[3] = {&beta, &thr, &graded};
  const char* names[3] = {"grad_beta", "grad_threshold", "grad_graded_spikes_factor"};
  for (int k = 0; k < 3; ++k) check<T>(*grads[k], names[k], {ins[k]->shape(0)}, true);

  LifArgs<T> a;
  set_grid(a, T_, R, L, pn);
  const fastlif::Items items(a.R, a.L);
  std::vector<T> partial(3 * items.count * fastlif::kChunk);
  a.grad_spk = static_cast<const T*>(grad_spk.data());
  a.grad_mem = static_cast<const T*>(grad_mem.data());
  a.mem_saved = uses_delay ? cptr<T>(mem_saved) : nullptr;
  a.u_in = uses_delay ? nullptr : cptr<T>(u_saved);
  a.r_in = uses_delay ? nullptr : cptr<uint8_t>(r_saved);
  a.mem0 = cptr<T>(mem0);
  a.beta = params[0]; a.thr = params[1]; a.graded = params[2];
  a.grad_x = static_cast<T*>(grad_x.cast<py::array>().mutable_data());
  a.grad_mem0 = mptr<T>(grad_mem0);
  a.partial_beta = partial.data();
  a.partial_thr = partial.data() + items.count * fastlif::kChunk;
  a.partial_graded = partial.data() + 2 * items.count * fastlif::kChunk;
  a.sg_param = static_cast<T>(sg_param);
  a.num_threads = num_threads > 0 ? num_threads : 1;
  T* outs[3];
  for (int k = 0; k < 3; ++k) outs[k] = static_cast<T*>(grads[k]->cast<py::array>().mutable_data());
  py::gil_scoped_release release;
  dispatch_bwd<T>(a, reset, uses_delay, pn, sg);
  const T* partials[3] = {a.partial_beta, a.partial_thr, a.partial_graded};
  for (int k = 0; k < 3; ++k) {
    if (pn && ins[k]->shape(0) == 1 && L != 1) {  // expanded scalar: its gradient sums over L
      std::vector<T> per(L);
      fastlif::reduce_partials<T>(partials[k], a.R, a.L, true, per.data());
      double acc = 0;
      for (int64_t l = 0; l < L; ++l) acc += per[l];
      outs[k][0] = static_cast<T>(acc);
    } else {
      fastlif::reduce_partials<T>(partials[k], a.R, a.L, pn, outs[k]);
    }
  }
}

bool is_float64(const py::array& a) { return a.dtype().is(py::dtype::of<double>()); }

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastlif fused LIF CPU kernels (see csrc/lif_kernel.h)";
  m.def("lif_fwd", [](const py::array& x, const py::object& mem0, const py::array& beta, const py::array& thr,
                      const py::array& graded, const py::array& spk, const py::array& mem, const py::object& u_saved,
                      const py::object& r_saved, int reset, bool delay, int num_threads) {
          if (is_float64(x)) fwd_typed<double>(x, mem0, beta, thr, graded, spk, mem, u_saved, r_saved, reset, delay, num_threads);
          else fwd_typed<float>(x, mem0, beta, thr, graded, spk, mem, u_saved, r_saved, reset, delay, num_threads);
        },
        py::arg("x"), py::arg("mem0"), py::arg("beta"), py::arg("threshold"), py::arg("graded"), py::arg("spk"),
        py::arg("mem"), py::arg("u_saved"), py::arg("r_saved"), py::arg("reset_mode"), py::arg("reset_delay"),
        py::arg("num_threads"));
  m.def("lif_bwd", [](const py::array& grad_spk, const py::array& grad_mem, const py::object& mem_saved,
                      const py::object& u_saved, const py::object& r_saved, const py::object& mem0,
                      const py::array& beta, const py::array& thr, const py::array& graded, const py::array& grad_x,
                      const py::object& grad_mem0, const py::array& grad_beta, const py::array& grad_thr,
                      const py::array& grad_graded, int reset, bool delay, int sg, double sg_param, int num_threads) {
          auto f = is_float64(grad_spk) ? bwd_typed<double> : bwd_typed<float>;
          f(grad_spk, grad_mem, mem_saved, u_saved, r_saved, mem0, beta, thr, graded, grad_x, grad_mem0, grad_beta,
            grad_thr, grad_graded, reset, delay, sg, sg_param, num_threads);
        },
        py::arg("grad_spk"), py::arg("grad_mem"), py::arg("mem_saved"), py::arg("u_saved"), py::arg("r_saved"),
        py::arg("mem0"), py::arg("beta"), py::arg("threshold"), py::arg("graded"), py::arg("grad_x"),
        py::arg("grad_mem0"), py::arg("grad_beta"), py::arg("grad_threshold"), py::arg("grad_graded"),
        py::arg("reset_mode"), py::arg("reset_delay"), py::arg("surrogate_kind"), py::arg("surrogate_param"),
        py::arg("num_threads"));
#ifdef _OPENMP
  m.attr("openmp") = true;
#else
  m.attr("openmp") = false;
#endif
}
