"""Feature plane: the Feast repository (features/repo), the batch feature pipeline and
the request-time transforms shared by training and serving."""
