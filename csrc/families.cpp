// The spec'd neuron families (fastlif/family.py) and their one binding form, family_fwd and
// family_bwd (csrc/scan.h). A new family: its step struct in csrc/families/<name>.h, one
// include and one entry in the list below.
#include "scan.h"

#include "families/alpha.h"
#include "families/lapicque.h"
#include "families/synaptic.h"
#include "families/rsynaptic.h"
#include "families/sj_lif.h"

namespace fastlif {
namespace {

void register_spec_families(pybind11::module_& m) {
  register_families<LapicqueStep, SynapticStep, AlphaStep, RSynapticStep, SjLifStep>(m);
}

}  // namespace

FASTLIF_REGISTER(register_spec_families);

}  // namespace fastlif
