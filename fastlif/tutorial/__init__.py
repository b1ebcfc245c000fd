"""``fastlif.tutorial``: the tutorial fastlif grew from, end to end on fused layers: its network
(:mod:`.model`), its data (:mod:`.data`: MNIST, or offline digits), its figures (:mod:`.plot`)
and the demo that runs them (:mod:`.demo`, ``fastlif demo``). An application on top of
fastlif's core, which never imports it; it needs the ``[demo]`` extra (matplotlib, tqdm,
torchvision, scikit-learn)."""
