// The spec'd neuron families (fastlif/family.py): their one binding form, family_fwd and
// family_bwd, and the entry points csrc/autograd.cpp calls, each dispatching by name to the
// kernels a family registered from its own file (csrc/families/<name>.cpp, FASTLIF_FAMILY in
// csrc/scan.h). A new family adds its file and touches none here.
#include "entry_points.h"

#include "scan.h"

namespace fastlif {
namespace {

const FamilyKernels& kernels_of(const std::string& name) {
  const auto& all = family_registry();
  const auto it = all.find(name);
  if (it == all.end()) throw std::invalid_argument("no C++ kernels for the neuron family '" + name + "'");
  return it->second;
}

}  // namespace

void family_forward(const std::string& name, int dtype, int64_t T, int64_t R, int64_t L, std::uintptr_t x,
                    const Pointers& state0, const ParamTuples& params, std::uintptr_t spk, const Pointers& states,
                    const std::vector<int>& options, int threads) {
  kernels_of(name).forward(dtype, T, R, L, x, state0, params, spk, states, options, threads);
}

void family_backward(const std::string& name, int dtype, int64_t T, int64_t R, int64_t L, std::uintptr_t grad_spk,
                     const Pointers& grad_states, std::uintptr_t x, const Pointers& state0, const Pointers& states,
                     const ParamTuples& params, std::uintptr_t grad_x, const Pointers& grad_state0,
                     const Pointers& grad_params, const std::vector<int>& options, int sg, double sg_param,
                     int threads) {
  kernels_of(name).backward(dtype, T, R, L, grad_spk, grad_states, x, state0, states, params, grad_x, grad_state0,
                            grad_params, options, sg, sg_param, threads);
}

namespace {

// The bindings release the GIL for the kernels' whole run.
void register_spec_families(pybind11::module_& m) {
  namespace py = pybind11;
  using release = py::call_guard<py::gil_scoped_release>;
  m.def("family_fwd", &family_forward, release(), "a spec'd family's forward over T steps (pointers; see fastlif/family.py)",
        py::arg("family"), py::arg("dtype"), py::arg("T"), py::arg("R"), py::arg("L"), py::arg("x"), py::arg("state0"),
        py::arg("params"), py::arg("spk"), py::arg("states"), py::arg("options"), py::arg("num_threads"));
  m.def("family_bwd", &family_backward, release(),
        "a spec'd family's surrogate backward over T steps (pointers; see fastlif/family.py)", py::arg("family"),
        py::arg("dtype"), py::arg("T"), py::arg("R"), py::arg("L"), py::arg("grad_spk"), py::arg("grad_states"),
        py::arg("x"), py::arg("state0"), py::arg("states"), py::arg("params"), py::arg("grad_x"),
        py::arg("grad_state0"), py::arg("grad_params"), py::arg("options"), py::arg("surrogate_kind"),
        py::arg("surrogate_param"), py::arg("num_threads"));
  py::list names;  // the registry's, in name order
  for (const auto& entry : family_registry()) names.append(entry.first);
  m.attr("families") = py::tuple(names);
}

}  // namespace

FASTLIF_REGISTER(register_spec_families);

}  // namespace fastlif
