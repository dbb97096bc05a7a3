"""What a call cost: price tables (the bundled snapshot and the user's own prices), name
resolution, and repricing stored calls."""
