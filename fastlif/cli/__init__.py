"""The ``fastlif`` command (also ``python -m fastlif``); an application on top of the core.

``fastlif demo``   the tutorial end to end with fused layers (:mod:`fastlif.tutorial.demo`)
``fastlif check``  every available backend against the reference on this machine, and a
                   short speed table; exits 1 if a backend disagrees (:mod:`.check`)
"""
import argparse
import sys

from .check import check

__all__ = ["main", "check"]


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _nonneg_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def build_parser():
    parser = argparse.ArgumentParser(
        prog="fastlif", description="fastlif: snnTorch's Leaky neuron run by fused CPU/GPU kernels.")
    sub = parser.add_subparsers(dest="command", metavar="{demo,check}")
    sub.required = True

    demo = sub.add_parser(
        "demo", help="the SNN tutorial end to end: LIF simulation, Poisson encoding, training "
                     "TinySNN with fused layers, figures",
        description="Runs the tutorial end to end on fastlif (fast Poisson encoder, SpikeLinear, fused "
                    "Leaky layers; each can be turned back to the tutorial's) and writes its figures "
                    "as PNGs into --out.")
    demo.add_argument("--epochs", type=_nonneg_int, default=15, help="training epochs (default 15)")
    demo.add_argument("--subset", type=_positive_int, default=10000,
                      help="training images drawn at random from the training set (default 10000)")
    demo.add_argument("--num-steps", type=_positive_int, default=50, help="time steps T (default 50)")
    demo.add_argument("--batch-size", type=_positive_int, default=64, help="batch size (default 64)")
    demo.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (cuda if available)")
    demo.add_argument("--data", default="./data", help="where MNIST is cached (default ./data)")
    demo.add_argument("--out", default="./demo_out", help="where the figures go (default ./demo_out)")
    demo.add_argument("--dataset", choices=("auto", "mnist", "digits"), default="auto",
                      help="mnist, digits (scikit-learn's 8x8 digits upscaled, offline), or auto "
                           "(default: mnist, falling back to digits when it cannot be downloaded)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--backend", choices=("auto", "cpp", "triton", "reference"), default="auto",
                      help="LIF backend for training (default auto)")
    demo.add_argument("--timing-batches", type=_nonneg_int, default=5,
                      help="batches timed per backend for the speed comparison (default 5; 0 skips it)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.add_argument("--tutorial-encoder", action="store_true",
                      help="the tutorial's Poisson encoding, draw for draw (default: the fast encoder, "
                           "same law, event-driven)")
    demo.add_argument("--dense-linear", action="store_true",
                      help="nn.Linear for fc1/fc2, as the tutorial (default: fastlif.SpikeLinear, "
                           "which skips zero inputs)")
    demo.add_argument("--per-step", action="store_true",
                      help="step the LIF layers one time step per call, as the tutorial's loop "
                           "(default: fused over the whole sequence)")

    chk = sub.add_parser("check", help="check every available backend against the reference here",
                         description="Runs every available backend against the reference loop on a "
                                     "few shapes and options (forward spikes identical, membrane and "
                                     "gradients close) and prints a short speed table. Exit status 1 "
                                     "if a backend disagrees.")
    chk.add_argument("--device", default="all", help="cpu, cuda, or all available (default)")
    chk.add_argument("--no-speed", action="store_true", help="skip the speed table")
    return parser


def main(argv=None):
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "demo":
        from ..tutorial.data import DatasetUnavailable  # the demo needs the [demo] extra
        from ..tutorial.demo import DemoConfig, run
        cfg = DemoConfig(epochs=args.epochs, subset=args.subset, num_steps=args.num_steps,
                         batch_size=args.batch_size, device=args.device, data=args.data, out=args.out,
                         dataset=args.dataset, seed=args.seed, backend=args.backend,
                         timing_batches=args.timing_batches, progress=not args.no_progress,
                         encoder="tutorial" if args.tutorial_encoder else "fast",
                         spike_linear=not args.dense_linear, fused=not args.per_step)
        try:
            run(cfg)
        except DatasetUnavailable as err:
            print(f"fastlif demo: MNIST is not available ({err}); run with --dataset digits or "
                  f"--dataset auto to use the offline digits.", file=sys.stderr)
            return 2
        return 0
    if args.command == "check":
        return check(args.device, speed=not args.no_speed)
    return 2
