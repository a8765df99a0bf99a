"""Operations plane (drift, skew, performance, policy). Not built yet: see the
monitoring issue. Its inputs are the prediction log and each version's reference sample."""
