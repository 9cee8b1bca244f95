"""Every benchmark in one run on this machine: ``python -m bench``."""

from __future__ import annotations

from bench import inference, service


def main() -> None:
    print("\n".join(inference.describe_machine()))
    print()
    print(inference.report())
    print()
    print(service.report())


if __name__ == "__main__":
    main()
