# The gateway's image: Caddy built with the caddy-agcluster plugin.
#
#   make caddy      # xcaddy/build.sh: a static ./caddy with the plugin
#   docker build -f providers/kubernetes/deploy/caddy.Dockerfile -t agcluster/caddy:latest .
#
# Push it to a registry your nodes pull from (or load it into the nodes'
# runtime) and reference it in caddy.yaml. Caddy carries its own root
# certificates, so the image needs nothing but the binary.
FROM scratch
COPY caddy /usr/bin/caddy
USER 65532:65532
ENTRYPOINT ["/usr/bin/caddy"]
CMD ["run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"]
