#!/usr/bin/env bash
# Builds the killfeed container image without a registry: the final stage of
# deploy/Dockerfile (FROM scratch), fed by static binaries from the local Go
# toolchain instead of the golang build image. Nothing is pulled; the build
# takes seconds.
#
# Usage: deploy/build-local.sh [--image NAME] [--smoke]
#   --image NAME   image name (default $KILLFEED_IMAGE or killfeed:local)
#   --smoke        then run the image (serve with its embedded broker, /data
#                  on a tmpfs owned by 65532), produce synthetic killmails
#                  into it through its published Kafka port (killfeed
#                  produce, from the image), check /healthz, /readyz, the
#                  health probe and REST polls through the published HTTP
#                  port, and remove the containers
# Needs: go, docker (daemon running); curl for --smoke, and kcat if present
# is used too.
set -euo pipefail

self="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
here="$(dirname "$self")"
root="$(dirname "$here")"
image="${KILLFEED_IMAGE:-killfeed:local}"
smoke=0
while (($#)); do
	case "$1" in
	--image) image="$2"; shift ;;
	--smoke) smoke=1 ;;
	-h | --help) sed -n '2,/^set -euo/p' "$self" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) echo "build-local.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
	esac
	shift
done

started=$SECONDS
log() { printf '[build-local +%3ds] %s\n' "$((SECONDS - started))" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

command -v go >/dev/null || die "go is not installed"
command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "the Docker daemon is not running (docker info fails)"
((smoke == 0)) || command -v curl >/dev/null || die "--smoke needs curl"

ctx="$(mktemp -d "${TMPDIR:-/tmp}/killfeed-image.XXXXXX")"
container=""
cleanup() {
	if [[ -n "$container" ]]; then
		docker rm -f "$container" >/dev/null 2>&1 || true
	fi
	rm -rf "$ctx"
}
trap cleanup EXIT

# The out/ directory the Dockerfile's build stage makes in /src.
out="$ctx/src/out"
mkdir -p "$out/rootfs/etc/ssl/certs" "$out/data"
arch="$(docker version --format '{{.Server.Arch}}')"
log "building static binaries for linux/$arch"
build() {
	(cd "$root" && CGO_ENABLED=0 GOOS=linux GOARCH="$arch" go build -trimpath -buildvcs=false -ldflags='-s -w' -o "$1" "$2")
}
build "$out/rootfs/killfeed" ./cmd/killfeed
build "$out/rootfs/probe" ./deploy/probe
if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
	cp /etc/ssl/certs/ca-certificates.crt "$out/rootfs/etc/ssl/certs/"
else
	log "warning: no /etc/ssl/certs/ca-certificates.crt here; the image has no CA certificates"
fi

# The Dockerfile's final stage, copying from this context instead of the
# build stage.
sed -n '/^FROM scratch/,$p' "$here/Dockerfile" | sed 's/^COPY --from=build /COPY /' >"$ctx/Dockerfile"
grep -q '^ENTRYPOINT' "$ctx/Dockerfile" || die "could not find the final stage (FROM scratch ...) in $here/Dockerfile"
log "building image $image"
docker build -q -t "$image" "$ctx" >/dev/null
log "built $image ($(docker image inspect --format '{{.Size}}' "$image" | awk '{printf "%.1f MB", $1/1e6}'))"

((smoke)) || exit 0

# --- smoke test ---------------------------------------------------------------
# The broker advertises 127.0.0.1:<its port>, so the Kafka port is published
# on the same number: a free one below Linux's ephemeral range, tried a few
# times.
started_container=0
for _ in 1 2 3 4 5; do
	kport=$((20000 + RANDOM % 12000))
	container="killfeed-smoke-$$-$kport"
	log "starting container $container (Kafka on 127.0.0.1:$kport)"
	if docker run -d --name "$container" -p 127.0.0.1::8080 -p "127.0.0.1:$kport:$kport" \
		--tmpfs /data:uid=65532,gid=65532,mode=0700 \
		"$image" serve --source none --listen 0.0.0.0:8080 --kafka-listen "0.0.0.0:$kport" --data-dir /data >/dev/null; then
		started_container=1
		break
	fi
	docker rm -f "$container" >/dev/null 2>&1 || true
done
((started_container)) || die "could not start the container (ports busy?)"

fail() {
	log "container log (last 40 lines):"
	docker logs --tail 40 "$container" >&2 || true
	die "$*"
}
port="$(docker port "$container" 8080/tcp | head -1)"
url="http://127.0.0.1:${port##*:}"
running() { [[ "$(docker inspect --format '{{.State.Running}}' "$container" 2>/dev/null)" == true ]]; }

# wait_for PATH waits up to 30 s for a 2xx answer.
wait_for() {
	for _ in $(seq 1 150); do
		curl -fsS -o /dev/null "$url$1" 2>/dev/null && return 0
		running || fail "the container exited"
		sleep 0.2
	done
	fail "no 2xx from $url$1 within 30 s"
}
wait_for /healthz
log "GET /healthz: ok"
wait_for /readyz
log "GET /readyz: ok"
docker exec "$container" /probe >/dev/null || fail "the image's health probe failed"
log "health probe (/probe in the container): ok"
[[ "$(docker inspect --format '{{.Config.User}}' "$container")" == 65532:65532 ]] || fail "the container does not run as 65532:65532"

log "producing 300 synthetic killmails through 127.0.0.1:$kport"
docker run --rm --network host "$image" produce --brokers "127.0.0.1:$kport" \
	--source synthetic --count 300 --rate 0 --seed 1 --log-level warn ||
	fail "killfeed produce into the published Kafka port failed"

# The trade hubs get most synthetic killmails.
poll="$url/api/killfeed?client_id=smoke&systems=30000142,30002187,30002659,30002510,30002053"
events=0
for _ in $(seq 1 50); do
	body="$(curl -fsS -g "$poll")" || fail "GET $poll failed"
	events=$((events + $(grep -o '"event_id"' <<<"$body" | wc -l)))
	((events > 0)) && break
	sleep 0.2
done
((events > 0)) || fail "REST poll returned no events within 10 s of producing"
log "REST poll: $events events"
if command -v kcat >/dev/null; then
	# librdkafka dials exactly the advertised address.
	echo '{"killmail_id":4242424242,"solar_system_id":30000142}' |
		timeout 30 kcat -P -b "127.0.0.1:$kport" -t killmails -k 30000142 -X topic.partitioner=murmur2_random ||
		fail "kcat could not produce through the published Kafka port"
	found=0
	for _ in $(seq 1 50); do
		body="$(curl -fsS -g "$url/api/killfeed?client_id=smoke-kcat&systems=30000142&limit=10000")" || fail "REST poll failed"
		if grep -q '"killmail_id":4242424242' <<<"$body"; then
			found=1
			break
		fi
		sleep 0.2
	done
	((found)) || fail "the killmail kcat produced did not arrive"
	log "kcat produced through 127.0.0.1:$kport; REST poll returned it"
fi
status="$(curl -s -o /dev/null -w '%{http_code}' -g "$url/api/killfeed?client_id=smoke&systems=-1")"
[[ "$status" == 400 ]] || fail "a bad REST request got $status, want 400"
log "smoke test passed in $((SECONDS - started)) s; removing $container"
