"""Every benchmark in one run on this machine: ``python -m bench``."""

from __future__ import annotations

from bench import inference, service


def main() -> None:
    heap = inference.heap_as_served()
    print("\n".join(inference.describe_machine()))
    print(heap)
    print()
    print(inference.report())
    print()
    print(service.report())


if __name__ == "__main__":
    main()
