"""python -m examples.experiments: list every experiment (name, claim, source, budget)."""
import textwrap

from examples.experiments import discover


def main(argv=None):
    experiments = discover()
    for exp in experiments:
        budget = ", ".join(f"{scale} {exp.BUDGET[scale]}" for scale in ("quick", "default", "full"))
        print(f"{exp.NAME}")
        print(textwrap.fill(exp.CLAIM, 96, initial_indent="  claim:  ", subsequent_indent="          "))
        print(textwrap.fill(exp.SOURCE, 96, initial_indent="  source: ", subsequent_indent="          "))
        print(f"  budget: {budget}")
        print(f"  run:    python -m examples.experiments.{exp.NAME} [--quick | --full] [--help]")
        print()
    print(f"{len(experiments)} experiments; results go to results/experiments/<name>/")
    return experiments


if __name__ == "__main__":
    main()
