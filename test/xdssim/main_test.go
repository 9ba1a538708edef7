package xdssim_test

import (
	"os"
	"testing"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"gatehouse.dev/gatehouse/test/testenv"
)

func TestMain(m *testing.M) {
	ctrllog.SetLogger(logr.Discard()) // the tests give each manager a logger of their own
	os.Exit(testenv.Main(m))
}
