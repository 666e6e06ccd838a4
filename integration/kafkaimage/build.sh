#!/usr/bin/env bash
# Builds killfeed-kafka:<version>, a local Apache Kafka image for the
# integration tests, on machines that cannot pull the official apache/kafka
# image. Everything comes from places such machines can reach: the broker
# jars from Maven Central (cached in ~/.m2), a JRE jlinked from the installed
# JDK, and a static Go launcher. The image is FROM scratch: the JRE plus the
# shared libraries ldd names for it, the jars, and the launcher.
#
# Idempotent: the image carries a label with a hash of this directory's
# inputs, and an image built from the same inputs is kept (seconds), unless
# --force is given.
#
# Usage: build.sh [--force] [--try-official] [--kafka-version V] [--image NAME]
#   --force           rebuild even if an up-to-date image exists
#   --try-official    first try to pull apache/kafka:V; if that works, build
#                     nothing (the tests prefer the official image)
#   --kafka-version   Apache Kafka version (default $KAFKA_VERSION or 4.4.0)
#   --image           image name (default $KILLFEED_KAFKA_LOCAL_IMAGE or
#                     killfeed-kafka:V)
# Needs: docker (running), go, and for a build also mvn and a JDK with jlink
# and jmods (JDK 17 or later; $JAVA_HOME or the one on PATH).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
kafka_version="${KAFKA_VERSION:-4.4.0}"
image="${KILLFEED_KAFKA_LOCAL_IMAGE:-}"
force=0
try_official=0

while (($#)); do
	case "$1" in
	--force) force=1 ;;
	--try-official) try_official=1 ;;
	--kafka-version) kafka_version="$2"; shift ;;
	--image) image="$2"; shift ;;
	-h | --help) sed -n '2,/^set -euo/p' "$here/build.sh" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) echo "build.sh: unknown argument: $1" >&2; exit 2 ;;
	esac
	shift
done
image="${image:-killfeed-kafka:${kafka_version}}"
official="apache/kafka:${kafka_version}"

started=$SECONDS
log() { printf '[kafkaimage +%3ds] %s\n' "$((SECONDS - started))" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "the Docker daemon is not running (docker info fails)"

if ((try_official)); then
	if docker image inspect "$official" >/dev/null 2>&1; then
		log "official image $official is present; nothing to build"
		exit 0
	fi
	log "trying to pull the official image $official"
	if timeout 300 docker pull -q "$official" >&2; then
		log "pulled $official; nothing to build"
		exit 0
	fi
	log "cannot pull $official; building the local image $image instead"
fi

# The hash covers everything that goes into the image except the JDK and
# the jars, which the Kafka version pins.
inputs_hash() {
	cd "$here"
	{
		printf 'kafka %s\n' "$kafka_version"
		sha256sum build.sh Dockerfile pom.xml log4j2.properties
		find launcher -name '*.go' ! -name '*_test.go' -print0 | sort -z | xargs -0 sha256sum
	} | sha256sum | cut -c1-16
}
hash="$(inputs_hash)"
label=io.killfeed.kafkaimage.inputs

if ((!force)); then
	have="$(docker image inspect --format "{{ index .Config.Labels \"$label\" }}" "$image" 2>/dev/null || true)"
	if [[ "$have" == "$hash" ]]; then
		log "image $image is up to date (inputs $hash); skipping the build (use --force to rebuild)"
		exit 0
	elif [[ -n "$have" ]]; then
		log "image $image exists but was built from other inputs; rebuilding"
	fi
fi

command -v mvn >/dev/null || die "mvn (Maven) is not installed"
command -v go >/dev/null || die "go is not installed"
command -v ldd >/dev/null || die "ldd is not installed"
if [[ -z "${JAVA_HOME:-}" ]]; then
	jlink_bin="$(command -v jlink)" || die "jlink not found: install a JDK (17 or later) or set JAVA_HOME"
	JAVA_HOME="$(dirname "$(dirname "$(readlink -f "$jlink_bin")")")"
fi
[[ -d "$JAVA_HOME/jmods" ]] || die "$JAVA_HOME has no jmods directory; jlink needs a full JDK"

work="$(mktemp -d "${TMPDIR:-/tmp}/killfeed-kafkaimage.XXXXXX")"
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"
mkdir -p "$root/opt/kafka/libs" "$root/opt/kafka/config" "$root/var/lib/kafka/data" "$root/etc" "$root/tmp"
chmod 1777 "$root/tmp"

log "building $image: Apache Kafka $kafka_version, JRE from $JAVA_HOME (work dir $work)"

log "1/5 fetching the broker jars from Maven Central (cached in ~/.m2)"
cp "$here/pom.xml" "$work/pom.xml"
# Debian's Maven writes colour resets even with -q and no terminal.
mvn -q -B -Dstyle.color=never -f "$work/pom.xml" -Dkafka.version="$kafka_version" \
	org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
	-DincludeScope=runtime -DoutputDirectory="$root/opt/kafka/libs" 2>&1 | sed 's/\x1b\[[0-9;]*m//g' >&2
log "    $(find "$root/opt/kafka/libs" -name '*.jar' | wc -l) jars, $(du -sh "$root/opt/kafka/libs" | cut -f1)"

log "2/5 jlinking a JRE"
# All modules: a hand-picked list is smaller but fails at run time when a
# code path loads a module nobody listed (java.beans in java.desktop, JMX,
# JNDI); image size does not matter for a test image.
# The CDS archive makes each JVM start (format, then broker) a little quicker.
"$JAVA_HOME/bin/jlink" --module-path "$JAVA_HOME/jmods" --add-modules ALL-MODULE-PATH \
	--strip-debug --no-header-files --no-man-pages --generate-cds-archive \
	--output "$root/opt/jre" 2>&1 | { grep -v 'incubator modules' || true; } >&2
log "    $(du -sh "$root/opt/jre" | cut -f1)"

log "3/5 copying the shared libraries the JRE links against"
# A FROM scratch image has no libc: copy every library ldd resolves outside
# the JRE (libc, libm, libz, libstdc++, libgcc_s, the loader) to the same
# path, following symlinks. Libraries ldd cannot find belong to optional
# JRE parts (X11, sound) that a headless broker never loads.
libs="$(
	for f in "$root/opt/jre/bin/java" "$root/opt/jre/lib/server/libjvm.so" "$root"/opt/jre/lib/*.so; do
		ldd "$f" 2>/dev/null || true
	done | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | grep -v "^$root/" | sort -u
)"
for lib in $libs; do
	mkdir -p "$root$(dirname "$lib")"
	cp -L "$lib" "$root$lib"
done
log "    $(wc -w <<<"$libs") libraries: $(xargs -n1 basename <<<"$libs" | tr '\n' ' ')"
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
printf 'root:x:0:0:root:/tmp:/launcher\n' >"$root/etc/passwd"
printf 'root:x:0:\n' >"$root/etc/group"
cp "$here/log4j2.properties" "$root/opt/kafka/config/"

log "4/5 building the static launcher"
(cd "$here/launcher" && CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags='-s -w' -o "$root/launcher" .)

log "5/5 building the image"
cp "$here/Dockerfile" "$work/Dockerfile"
build_env=()
# Without the buildx plugin a recent docker CLI refuses BuildKit builds; the
# classic builder is plenty for COPY into scratch.
docker buildx version >/dev/null 2>&1 || build_env=(DOCKER_BUILDKIT=0)
env "${build_env[@]}" docker build -q \
	--label "$label=$hash" \
	--label "org.opencontainers.image.title=killfeed-kafka" \
	--label "org.opencontainers.image.description=Apache Kafka $kafka_version (KRaft, single node) for killfeed's integration tests" \
	--label "org.opencontainers.image.version=$kafka_version" \
	-t "$image" "$work" >/dev/null

log "built $image ($(docker image inspect --format '{{ .Size }}' "$image" | awk '{ printf "%d MB", $1 / 1e6 }')) in $((SECONDS - started))s"
