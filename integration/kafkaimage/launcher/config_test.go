package main

import (
	"encoding/base64"
	"slices"
	"testing"
)

func TestPropertyName(t *testing.T) {
	for env, want := range map[string]string{
		"KAFKA_LOG_RETENTION_CHECK_INTERVAL_MS": "log.retention.check.interval.ms",
		"KAFKA_LOG_CLEANER_BACKOFF_MS":          "log.cleaner.backoff.ms",
		"KAFKA_ADVERTISED_LISTENERS":            "advertised.listeners",
		"KAFKA_SOME__UNDERSCORE":                "some_underscore",
		"KAFKA_SOME___DASH_NAME":                "some-dash.name",
		"KAFKA_A____B":                          "a-.b", // "___" binds first
	} {
		got, ok := propertyName(env)
		if !ok || got != want {
			t.Errorf("propertyName(%q) = %q, %v; want %q, true", env, got, ok, want)
		}
	}
	for _, env := range []string{"KAFKA_", "PATH", "CLUSTER_ID", "XKAFKA_FOO"} {
		if got, ok := propertyName(env); ok {
			t.Errorf("propertyName(%q) = %q, true; want no property", env, got)
		}
	}
}

func TestEnvPropertiesSkipsJVMAndLauncherVariables(t *testing.T) {
	got := envProperties([]string{
		"KAFKA_LOG_CLEANER_BACKOFF_MS=500",
		"KAFKA_HEAP_OPTS=-Xmx1g",
		"KAFKA_OPTS=-Dx=y",
		"KAFKA_ADVERTISED=localhost:1234",
		"CLUSTER_ID=abc",
		"KAFKA_LISTENERS=PLAINTEXT://0.0.0.0:9092",
	})
	want := map[string]string{
		"log.cleaner.backoff.ms": "500",
		"listeners":              "PLAINTEXT://0.0.0.0:9092",
	}
	if len(got) != len(want) {
		t.Fatalf("envProperties = %v; want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("envProperties[%q] = %q; want %q", k, got[k], v)
		}
	}
}

func TestDefaultsAdvertiseTheGivenAddress(t *testing.T) {
	p := defaults("127.0.0.1:40123")
	if got, want := p["advertised.listeners"], "PLAINTEXT://127.0.0.1:40123,BROKER://127.0.0.1:29092"; got != want {
		t.Errorf("advertised.listeners = %q; want %q", got, want)
	}
	// A static voter set needs no --standalone; dropping it switches to a
	// dynamic quorum that must be bootstrapped.
	if f := formatFlags(p); len(f) != 0 {
		t.Errorf("formatFlags(defaults) = %v; want none", f)
	}
	delete(p, "controller.quorum.voters")
	if f := formatFlags(p); !slices.Equal(f, []string{"--standalone"}) {
		t.Errorf("formatFlags(without voters) = %v; want [--standalone]", f)
	}
	p["process.roles"] = "broker"
	if f := formatFlags(p); len(f) != 0 {
		t.Errorf("formatFlags(broker only) = %v; want none", f)
	}
}

func TestRenderIsSortedAndEscaped(t *testing.T) {
	got := string(render(map[string]string{"b": `C:\x`, "a": "1\n2"}))
	want := "a=1\\n2\nb=C:\\\\x\n"
	if got != want {
		t.Errorf("render = %q; want %q", got, want)
	}
}

func TestLogDirs(t *testing.T) {
	got := logDirs(map[string]string{"log.dirs": "/a,/b", "metadata.log.dir": "/m"})
	if want := []string{"/a", "/b", "/m"}; !slices.Equal(got, want) {
		t.Errorf("logDirs = %v; want %v", got, want)
	}
}

func TestRandomClusterIDIsAKafkaUUID(t *testing.T) {
	id, err := randomClusterID()
	if err != nil {
		t.Fatal(err)
	}
	b, err := base64.RawURLEncoding.DecodeString(id)
	if err != nil || len(b) != 16 || len(id) != 22 {
		t.Errorf("randomClusterID = %q (%d bytes, err %v); want 22 chars of URL-safe base64 for 16 bytes", id, len(b), err)
	}
}
