"""The PostgreSQL backend: shared state for several engine replicas (`[store] url`)."""
