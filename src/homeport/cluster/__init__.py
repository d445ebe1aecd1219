"""homeport on a Ray Serve cluster (`homeport serve --ray-address ADDR`).

The `homeport serve` process stays the HTTP front (the ingress: same flags, auth, drain, errors);
the model engines run as Ray Serve replicas, each one a complete homeport app of its own
(ModelManager, engines, services) that the ingress forwards requests to through a deployment
handle. A request router (router.py) keeps a conversation on the replica whose prefix cache holds
it, else picks the least queued. Nothing here is imported unless --ray-address is given; only
launch.py, replica.py, router.py, broadcast.py and node_ingress.py import Ray, and only at run time.

Modules: privacy.py (the environment that keeps Ray offline), prefix.py (prompt keys and
prefix affinity, no Ray), router.py (the Serve request router), replica.py (the deployment),
ingress.py (the forwarding ASGI app), node_ingress.py (an ingress on every other node, a Ray
actor), launch.py (connect, deploy, serve).
"""
