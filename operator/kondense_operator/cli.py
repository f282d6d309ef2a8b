def main() -> None:  # placeholder until the operator lands
    raise SystemExit("kondense-operator: not built yet")
