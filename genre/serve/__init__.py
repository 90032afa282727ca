"""`genre serve`: a sweep's model behind a Ray Serve HTTP endpoint, audio posted in, its genre as JSON
out; the deployment runs in the Serve replica actors, the application's start and stop in the `genre`
process."""
