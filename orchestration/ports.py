"""Well-known ports, shared by the code, the Kubernetes manifests and the Dockerfiles (tests check
that deploy/ uses exactly these)."""

API_PORT = 8080  # the REST job service (`solrl serve api`)
RAY_GCS_PORT = 6379
RAY_DASHBOARD_PORT = 8265  # dashboard and Jobs API
RAY_CLIENT_PORT = 10001
RAY_METRICS_EXPORT_PORT = 8090  # Prometheus scrape endpoint of every Ray node
RAY_SERVE_HTTP_PORT = 8000  # the reward server's HTTP endpoint on a long-lived cluster
