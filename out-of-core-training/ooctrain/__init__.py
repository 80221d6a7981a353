"""Out-of-core training (Hayakawa & Narihira 2020): networks, training, memory planner."""
