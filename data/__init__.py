"""Data plane: the seeded payment simulator and the transactions table contract."""
