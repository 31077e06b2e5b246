"""A small module to try dglsp on: put the cursor on an empty line and ask for a completion."""


def mean(values: list[float]) -> float:
    """Arithmetic mean of a non-empty list."""
    return sum(values) / len(values)


def variance(values: list[float]) -> float:
    """Population variance."""
    center = mean(values)
    

def main() -> None:
    data = [1.0, 2.0, 4.0, 8.0]
    print(mean(data), variance(data))


if __name__ == "__main__":
    main()
