// The spec'd neuron families (fastlif/family.py) and their one binding form, family_fwd and
// family_bwd (csrc/scan.h). A new family: its step struct in csrc/families/<name>.h, one
// include and one entry in the list below.
#include "entry_points.h"

#include "scan.h"

#include "families/alpha.h"
#include "families/lapicque.h"
#include "families/synaptic.h"
#include "families/rsynaptic.h"
#include "families/sj_lif.h"

namespace fastlif {

using SpecFamilies = FamilySet<LapicqueStep, SynapticStep, AlphaStep, RSynapticStep, SjLifStep>;

void family_forward(const std::string& name, int dtype, int64_t T, int64_t R, int64_t L, std::uintptr_t x,
                    const Pointers& state0, const ParamTuples& params, std::uintptr_t spk, const Pointers& states,
                    const std::vector<int>& options, int threads) {
  SpecFamilies::forward(name, dtype, T, R, L, x, state0, params, spk, states, options, threads);
}

void family_backward(const std::string& name, int dtype, int64_t T, int64_t R, int64_t L, std::uintptr_t grad_spk,
                     const Pointers& grad_states, std::uintptr_t x, const Pointers& state0, const Pointers& states,
                     const ParamTuples& params, std::uintptr_t grad_x, const Pointers& grad_state0,
                     const Pointers& grad_params, const std::vector<int>& options, int sg, double sg_param,
                     int threads) {
  SpecFamilies::backward(name, dtype, T, R, L, grad_spk, grad_states, x, state0, states, params, grad_x, grad_state0,
                         grad_params, options, sg, sg_param, threads);
}

namespace {

void register_spec_families(pybind11::module_& m) { SpecFamilies::register_bindings(m); }

}  // namespace

FASTLIF_REGISTER(register_spec_families);

}  // namespace fastlif
