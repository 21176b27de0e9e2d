package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"credfed/internal/wait"
)

// ErrNoPostgres means PostgreSQL's server programs were not found: the
// bench runs without its baseline and says so.
var ErrNoPostgres = errors.New("bench: PostgreSQL is not installed (Debian: apt-get install postgresql)")

// EnvPostgresBin names a directory holding initdb and postgres, to use
// instead of Debian's /usr/lib/postgresql/<version>/bin or the PATH.
const EnvPostgresBin = "CREDFED_BENCH_PGBIN"

// FindPostgres returns the directory of PostgreSQL's initdb and postgres:
// $CREDFED_BENCH_PGBIN, the highest /usr/lib/postgresql/<version>/bin
// (Debian keeps them off the PATH there, as `dpkg -L postgresql-<version>`
// shows), or the PATH. ErrNoPostgres if none has both.
func FindPostgres() (string, error) {
	var dirs []string
	if d := os.Getenv(EnvPostgresBin); d != "" {
		dirs = append(dirs, d)
	}
	if p := newestGlob("/usr/lib/postgresql/*/bin/initdb"); p != "" {
		dirs = append(dirs, filepath.Dir(p))
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		dirs = append(dirs, filepath.Dir(p))
	}
	for _, d := range dirs {
		if exists(filepath.Join(d, "initdb")) && exists(filepath.Join(d, "postgres")) {
			return d, nil
		}
	}
	return "", ErrNoPostgres
}

// pgUser is the superuser of the throwaway cluster.
const pgUser = "bench"

// pgCluster is a throwaway PostgreSQL cluster on a loopback port.
type pgCluster struct {
	bin, root, data string
	port            int
	version         string
	walSync         string
	// asPostgres runs the server programs as the postgres user: they
	// refuse to run as root.
	asPostgres bool
	cmd        *exec.Cmd
	done       chan struct{}
	log        string
}

// startPostgres creates a cluster under a new temporary directory and
// starts it with fsync and synchronous commit on.
func startPostgres(ctx context.Context, bin string, logf func(string, ...any)) (_ *pgCluster, err error) {
	root, err := os.MkdirTemp("", "credfed-bench-pg-")
	if err != nil {
		return nil, err
	}
	c := &pgCluster{bin: bin, root: root, data: filepath.Join(root, "data"), log: filepath.Join(root, "postgres.log"), asPostgres: os.Geteuid() == 0}
	defer func() {
		if err != nil {
			c.stop(10 * time.Second)
		}
	}()
	if c.asPostgres {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("bench: running as root, PostgreSQL needs the postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(root, uid, gid); err != nil {
			return nil, err
		}
	}
	initdb := c.command(filepath.Join(bin, "initdb"), "-D", c.data, "-U", pgUser, "--auth=trust", "-E", "UTF8", "--locale=C")
	if out, err := initdb.CombinedOutput(); err != nil {
		hint := ""
		if c.asPostgres {
			hint = " (the postgres user must be able to reach " + root + ": is TMPDIR readable by others?)"
		}
		return nil, fmt.Errorf("bench: initdb%s: %w\n%s", hint, err, out)
	}
	if c.port, err = freePort(); err != nil {
		return nil, err
	}
	logFile, err := os.Create(c.log)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	settings := []string{
		"listen_addresses=127.0.0.1", "port=" + strconv.Itoa(c.port), "unix_socket_directories=" + root,
		// Durable, as a central copy must be: every commit's WAL synced
		// before it returns.
		"fsync=on", "synchronous_commit=on", "full_page_writes=on",
		// What a DBA sets for this machine and load: room for two pools
		// of 64, a quarter of a GiB of buffers, checkpoints spaced for
		// bulk loads.
		"max_connections=200", "shared_buffers=256MB", "max_wal_size=4GB", "checkpoint_completion_target=0.9",
		"logging_collector=off", "log_min_messages=warning",
	}
	args := []string{"-D", c.data}
	for _, s := range settings {
		args = append(args, "-c", s)
	}
	c.cmd = c.command(filepath.Join(bin, "postgres"), args...)
	c.cmd.Stdout, c.cmd.Stderr = logFile, logFile
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: starting postgres: %w", err)
	}
	c.done = make(chan struct{})
	go func() { c.cmd.Wait(); close(c.done) }()
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var last error
	if err := wait.For(wctx, 100*time.Millisecond, func() bool {
		select {
		case <-c.done:
			last = errors.New("postgres exited")
			cancel()
			return false
		default:
		}
		conn, err := pgx.Connect(wctx, c.dsn())
		if err != nil {
			last = err
			return false
		}
		defer conn.Close(wctx)
		if err := conn.QueryRow(wctx, "SHOW server_version").Scan(&c.version); err != nil {
			last = err
			return false
		}
		last = conn.QueryRow(wctx, "SHOW wal_sync_method").Scan(&c.walSync)
		return last == nil
	}); err != nil {
		return nil, fmt.Errorf("bench: PostgreSQL did not start: %v (%v); its log: %s", err, last, tail(c.log, 10))
	}
	logf("PostgreSQL %s on 127.0.0.1:%d (fsync on, synchronous_commit on, wal_sync_method %s)", c.version, c.port, c.walSync)
	return c, nil
}

// command runs a PostgreSQL program as the postgres user when root
// (runuser), as the caller otherwise.
func (c *pgCluster) command(prog string, args ...string) *exec.Cmd {
	if c.asPostgres {
		return exec.Command("runuser", append([]string{"-u", "postgres", "--", prog}, args...)...)
	}
	return exec.Command(prog, args...)
}

func (c *pgCluster) dsn() string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=%s dbname=postgres sslmode=disable connect_timeout=10", c.port, pgUser)
}

// postmaster is the server's process id (postmaster.pid's first line).
func (c *pgCluster) postmaster() int {
	data, err := os.ReadFile(filepath.Join(c.data, "postmaster.pid"))
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(data), "\n")
	pid, _ := strconv.Atoi(strings.TrimSpace(line))
	return pid
}

// stop shuts the server down fast (SIGINT: abort sessions, checkpoint,
// exit), kills what is left after timeout, and removes the cluster.
func (c *pgCluster) stop(timeout time.Duration) error {
	var err error
	if c.cmd != nil && c.cmd.Process != nil {
		if pid := c.postmaster(); pid > 0 {
			syscall.Kill(pid, syscall.SIGINT)
		} else {
			c.cmd.Process.Signal(syscall.SIGINT)
		}
		select {
		case <-c.done:
		case <-time.After(timeout):
			err = fmt.Errorf("bench: PostgreSQL did not stop within %v; killed", timeout)
			if pid := c.postmaster(); pid > 0 {
				syscall.Kill(pid, syscall.SIGKILL)
			}
			syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
			select {
			case <-c.done:
			case <-time.After(10 * time.Second):
			}
		}
	}
	if rerr := os.RemoveAll(c.root); rerr != nil && err == nil {
		err = rerr
	}
	return err
}

// freePort is a free TCP port on 127.0.0.1 (bound, then released).
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// tail is the last n lines of a file, for error messages.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// The central copy's schema: every record of every district in one
// table, keyed like credfed's (district, department, id), indexed by
// subject; an audit row per lookup and per submitted batch.
const schema = `
CREATE TABLE records (
  district       text NOT NULL,
  department     text NOT NULL,
  id             text NOT NULL,
  subject        text NOT NULL,
  catalog_item   text NOT NULL,
  decision_number text NOT NULL DEFAULT '',
  occurred_on    date NOT NULL,
  decided_on     date NOT NULL,
  summary        text NOT NULL DEFAULT '',
  polarity       text NOT NULL,
  severity       text NOT NULL,
  legal_basis    text NOT NULL,
  display_until  date NOT NULL,
  status         text NOT NULL DEFAULT 'active',
  version        int  NOT NULL DEFAULT 1,
  recorded_at    timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (district, department, id)
);
CREATE INDEX records_by_subject ON records (subject);
CREATE TABLE audit (
  seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  at           timestamptz NOT NULL DEFAULT now(),
  institution  text NOT NULL,
  operation    text NOT NULL,
  user_name    text NOT NULL DEFAULT '',
  purpose      text NOT NULL DEFAULT '',
  reference    text NOT NULL DEFAULT '',
  subject      text NOT NULL DEFAULT '',
  record_ids   text[]
);
`

// The prepared statements. A lookup is one statement: the audit row is
// inserted and the subject's displayed records visible to the purpose
// are read in one implicit transaction, whose commit (WAL synced) comes
// before the statement completes, hence before any answer.
const (
	stmtLookup = "lookup"
	sqlLookup  = `WITH a AS (
  INSERT INTO audit (institution, operation, user_name, purpose, reference, subject)
  VALUES ($1, 'lookup', $2, $3, $4, $5))
SELECT district, department, id, subject, catalog_item, decision_number, occurred_on::text, decided_on::text, summary,
       polarity, severity, legal_basis, display_until::text, status, version, recorded_at
FROM records WHERE subject = $5 AND display_until >= current_date AND catalog_item = ANY($6)`
	stmtInsert = "insert_batch"
	sqlInsert  = `INSERT INTO records (district, department, id, subject, catalog_item, decision_number, occurred_on, decided_on,
  summary, polarity, severity, legal_basis, display_until)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::date[], $8::date[],
  $9::text[], $10::text[], $11::text[], $12::text[], $13::date[])`
	stmtAuditBatch = "audit_batch"
	sqlAuditBatch  = `INSERT INTO audit (institution, operation, record_ids) VALUES ($1, 'record.submit', $2)`
)

var recordColumns = []string{"district", "department", "id", "subject", "catalog_item", "decision_number", "occurred_on",
	"decided_on", "summary", "polarity", "severity", "legal_basis", "display_until"}

// prepare prepares the statements on every new connection of a pool.
func prepare(ctx context.Context, conn *pgx.Conn) error {
	for name, sql := range map[string]string{stmtLookup: sqlLookup, stmtInsert: sqlInsert, stmtAuditBatch: sqlAuditBatch} {
		if _, err := conn.Prepare(ctx, name, sql); err != nil {
			return fmt.Errorf("bench: prepare %s: %w", name, err)
		}
	}
	return nil
}

// newPool opens a pool of size connections, all opened at once, each with
// the statements prepared.
func newPool(ctx context.Context, dsn string, size int) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	cfg.MaxConns, cfg.MinConns = int32(size), int32(size)
	cfg.AfterConnect = prepare
	p, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	// Open every connection now, not during a measurement.
	conns := make([]*pgxpool.Conn, 0, size)
	defer func() {
		for _, c := range conns {
			c.Release()
		}
	}()
	for range size {
		c, err := p.Acquire(ctx)
		if err != nil {
			p.Close()
			return nil, err
		}
		conns = append(conns, c)
	}
	return p, nil
}

// createSchema creates the tables (a fresh cluster).
func createSchema(ctx context.Context, dsn string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, schema)
	return err
}

// copyRow is a row as COPY takes it.
func copyRow(r Row) []any {
	return []any{r.District, r.Department, r.ID, r.Subject, r.CatalogItem, r.DecisionNumber, dateOf(r.OccurredOn), dateOf(r.DecidedOn),
		r.Summary, r.Polarity, r.Severity, r.LegalBasis, r.DisplayUntil.Time()}
}

func dateOf(s string) time.Time {
	t, _ := time.Parse(time.DateOnly, s)
	return t
}

// copyBatch writes rows in one transaction: COPY and the batch's audit
// row, committed synchronously.
func copyBatch(ctx context.Context, p *pgxpool.Pool, institution string, rows []Row) error {
	tx, err := p.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	src := make([][]any, len(rows))
	ids := make([]string, len(rows))
	for i, r := range rows {
		src[i], ids[i] = copyRow(r), r.District+"/"+r.Department+"/"+r.ID
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"records"}, recordColumns, pgx.CopyFromRows(src)); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, stmtAuditBatch, institution, ids); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// insertBatch writes rows in one transaction: one INSERT … SELECT FROM
// unnest of the batch's columns and the batch's audit row, committed
// synchronously.
func insertBatch(ctx context.Context, p *pgxpool.Pool, institution string, rows []Row) error {
	cols := make([][]string, 10)
	for i := range cols {
		cols[i] = make([]string, len(rows))
	}
	var occurred, decided, until []time.Time
	ids := make([]string, len(rows))
	for i, r := range rows {
		for j, v := range []string{r.District, r.Department, r.ID, r.Subject, r.CatalogItem, r.DecisionNumber, r.Summary, r.Polarity, r.Severity, r.LegalBasis} {
			cols[j][i] = v
		}
		occurred, decided, until = append(occurred, dateOf(r.OccurredOn)), append(decided, dateOf(r.DecidedOn)), append(until, r.DisplayUntil.Time())
		ids[i] = r.District + "/" + r.Department + "/" + r.ID
	}
	tx, err := p.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, stmtInsert, cols[0], cols[1], cols[2], cols[3], cols[4], cols[5], occurred, decided,
		cols[6], cols[7], cols[8], cols[9], until); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, stmtAuditBatch, institution, ids); err != nil {
		return err
	}
	return tx.Commit(ctx)
}
