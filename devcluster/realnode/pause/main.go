// Command pause is the process of every pod sandbox on the real-node lane's kind node: it holds the
// pod's namespaces open, reaps the zombies a shared process namespace hands it (it is PID 1 there),
// and exits on SIGINT or SIGTERM. Written here because no registry can be reached for
// registry.k8s.io/pause; it is built by devcluster/build.sh --real-node.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "-v" || os.Args[1] == "--version") {
		fmt.Println("cachewarden-pause 1")
		return
	}
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		// Reap every child that has exited; WNOHANG keeps the loop from blocking on live ones.
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
