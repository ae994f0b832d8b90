// netmorph::io and the file system: which paths the writers (write_safetensors, save, write_idx)
// replace and how (regular files only, mode and owner kept, read-only refused, symbolic links
// followed to their target, a short temporary name, nothing left behind by a failure or by
// SIGKILL, a new path made meanwhile not replaced), and which paths the readers open (regular files
// only, found by stat before opening, a FIFO does not block).
// POSIX only: the rules are about POSIX file types, modes, owners and links.

#include "support/io_support.hpp"

#include <netmorph/io.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#if defined(__linux__)
#include <sys/sysmacros.h>
#endif
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 34)
#include <dlfcn.h>  // dlsym in libc itself: no -ldl
#define NETMORPH_TEST_FAIL_FCLOSE 1
#endif

using namespace nmtest;
namespace io = netmorph::io;
namespace nn = netmorph::nn;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

namespace {

/// Removes `path` and, when it is a directory (not a link to one), everything below it.
void remove_tree(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return;
  if (S_ISDIR(st.st_mode)) {
    if (DIR* d = ::opendir(path.c_str())) {
      std::vector<std::string> names;
      while (dirent* e = ::readdir(d))
        if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0)
          names.push_back(e->d_name);
      ::closedir(d);
      for (const std::string& n : names)
        remove_tree(path + "/" + n);
    }
    ::rmdir(path.c_str());
  } else {
    ::unlink(path.c_str());
  }
}

/// A fresh directory in the test's working directory, removed with its content at scope end.
struct scratch_dir {
  std::string path;
  explicit scratch_dir(const std::string& stem) : path("netmorph_io_files_" + stem) {
    remove_tree(path);
    REQUIRE(::mkdir(path.c_str(), 0755) == 0);
  }
  ~scratch_dir() { remove_tree(path); }
  scratch_dir(const scratch_dir&) = delete;
  scratch_dir& operator=(const scratch_dir&) = delete;
  std::string operator/(const std::string& name) const { return path + "/" + name; }
};

/// The names in directory `dir`, sorted, without "." and "..".
std::vector<std::string> entries(const std::string& dir) {
  std::vector<std::string> out;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d))
      if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0)
        out.push_back(e->d_name);
    ::closedir(d);
  }
  std::sort(out.begin(), out.end());
  return out;
}

struct stat lstat_of(const std::string& path) {
  struct stat st {};
  REQUIRE(::lstat(path.c_str(), &st) == 0);
  return st;
}

unsigned permissions(const std::string& path) {
  return static_cast<unsigned>(lstat_of(path).st_mode & 07777);
}

std::string link_target(const std::string& path) {
  char buf[4096];
  const ssize_t n = ::readlink(path.c_str(), buf, sizeof buf);
  REQUIRE(n >= 0);
  return std::string(buf, static_cast<std::size_t>(n));
}

/// A small file content: one tensor of `n` floats `value`.
io::safetensors_content<float> content(float value, netmorph::index_type n = 6) {
  io::safetensors_content<float> c;
  c.tensors.push_back({"w", tensor<float>({n}, value)});
  return c;
}

/// The value of the first element of tensor "w" in `path`.
float first_value(const std::string& path) {
  return io::read_safetensors<float>(path).tensors.at(0).value.data()[0];
}

/// Whether the writers can use an unnamed temporary file in `dir`: O_TMPFILE, and /proc to name it
/// through (else they use a named temporary).
bool supports_unnamed_temporary(const std::string& dir) {
#if defined(O_TMPFILE)
  if (::access("/proc/self/fd", X_OK) != 0) return false;
  const int fd = ::open(dir.c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  ::close(fd);
  return true;
#else
  (void)dir;
  return false;
#endif
}

/// Whether `name` is a temporary name of the documented fallback pattern ".netmorph-XXXXXX".
bool is_fallback_temporary(const std::string& name) {
  return name.size() == 16 && name.compare(0, 10, ".netmorph-") == 0;
}

/// A Unix socket bound to `path`, closed (the name stays) at scope end.
struct bound_socket {
  int fd;
  explicit bound_socket(const std::string& path) : fd(::socket(AF_UNIX, SOCK_STREAM, 0)) {
    REQUIRE(fd >= 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    REQUIRE(path.size() < sizeof addr.sun_path);
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    REQUIRE(::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0);
  }
  ~bound_socket() { ::close(fd); }
  bound_socket(const bound_socket&) = delete;
  bound_socket& operator=(const bound_socket&) = delete;
};

}  // namespace

TEST_CASE("the writers refuse an OUT that is not a regular file, by name, and leave it as it was",
          "[io][files][error]") {
  scratch_dir d("kinds");
  const io::safetensors_content<float> c = content(1.0f);
  const std::string prefix = "netmorph::io::write_safetensors: '";

  const std::string dir = d / "dir.safetensors";
  REQUIRE(::mkdir(dir.c_str(), 0755) == 0);
  CHECK_THAT(io_error_message([&] { io::write_safetensors(dir, c); }),
             StartsWith(prefix + dir + "': is a directory, not a regular file"));
  CHECK(S_ISDIR(lstat_of(dir).st_mode));

  const std::string fifo = d / "fifo.safetensors";
  REQUIRE(::mkfifo(fifo.c_str(), 0644) == 0);
  CHECK_THAT(io_error_message([&] { io::write_safetensors(fifo, c); }),
             StartsWith(prefix + fifo + "': is a FIFO, not a regular file"));
  CHECK(S_ISFIFO(lstat_of(fifo).st_mode));

  const std::string sock = d / "sock";
  {
    bound_socket s(sock);
    CHECK_THAT(io_error_message([&] { io::write_safetensors(sock, c); }),
               StartsWith(prefix + sock + "': is a socket, not a regular file"));
  }
  CHECK(S_ISSOCK(lstat_of(sock).st_mode));

  // A character device like /dev/null: made here (root only) so that a regression replaces this
  // copy, not the system's.
  std::vector<std::string> expected = {"dir.safetensors", "fifo.safetensors", "sock"};
#if defined(__linux__)
  const std::string null = d / "null";
  if (::mknod(null.c_str(), S_IFCHR | 0666, makedev(1, 3)) == 0) {
    CHECK_THAT(io_error_message([&] { io::write_safetensors(null, c); }),
               StartsWith(prefix + null + "': is a character device, not a regular file"));
    CHECK(S_ISCHR(lstat_of(null).st_mode));
    expected.push_back("null");
  } else {
    WARN("cannot make a character device here (" << std::strerror(errno) << "): not checked");
  }
#endif

  // /dev/stdout is a link to /proc/self/fd/1; here a link of our own to a pipe's write end. The
  // link is followed (see the symbolic-link test) and its target, a FIFO, refused.
  int p[2];
  REQUIRE(::pipe(p) == 0);
  const std::string to_pipe = d / "stdout";
  REQUIRE(::symlink(("/proc/self/fd/" + std::to_string(p[1])).c_str(), to_pipe.c_str()) == 0);
  struct stat target {};
  if (::stat(to_pipe.c_str(), &target) == 0) {  // /proc is mounted
    CHECK_THAT(io_error_message([&] { io::write_safetensors(to_pipe, c); }),
               StartsWith(prefix + to_pipe + "': is a FIFO, not a regular file"));
    CHECK(S_ISLNK(lstat_of(to_pipe).st_mode));
  }
  ::close(p[0]);
  ::close(p[1]);
  expected.push_back("stdout");

  // save and write_idx replace files the same way.
  std::mt19937_64 rng = make_rng(700);
  const nn::model<float> m = every_kind_model<float>(rng);
  CHECK_THAT(io_error_message([&] { io::save(m, dir); }),
             StartsWith("netmorph::io::save: '" + dir + "': is a directory, not a regular file"));
  CHECK_THAT(io_error_message([&] {
               io::write_idx(fifo, {2}, {1, 2});
             }),
             StartsWith("netmorph::io::write_idx: '" + fifo + "': is a FIFO, not a regular file"));

  std::sort(expected.begin(), expected.end());
  CHECK(entries(d.path) == expected);  // nothing created beside them
}

TEST_CASE("the writers keep the mode and the owner of the file they replace", "[io][files]") {
  scratch_dir d("mode");
  const std::string path = d / "model.safetensors";
  // 0666 & ~umask (what a new file gets) differs from at least one of these for every umask.
  for (unsigned mode : {0600u, 0640u, 0604u, 0755u}) {
    CAPTURE(mode);
    io::write_safetensors(path, content(1.0f));
    REQUIRE(::chmod(path.c_str(), mode) == 0);
    io::write_safetensors(path, content(2.0f));
    CHECK(permissions(path) == mode);
    CHECK(first_value(path) == 2.0f);
  }
  std::mt19937_64 rng = make_rng(701);
  REQUIRE(::chmod(path.c_str(), 0600) == 0);
  io::save(every_kind_model<double>(rng), path);
  CHECK(permissions(path) == 0600u);
  const std::string idx = d / "data.idx";
  io::write_idx(idx, {2}, {1, 2});
  REQUIRE(::chmod(idx.c_str(), 0640) == 0);
  io::write_idx(idx, {3}, {1, 2, 3});
  CHECK(permissions(idx) == 0640u);

  if (::geteuid() == 0) {  // only root can give a file to another owner
    const uid_t uid = 12345;
    const gid_t gid = 23456;
    REQUIRE(::chown(path.c_str(), uid, gid) == 0);
    REQUIRE(::chmod(path.c_str(), 0600) == 0);
    io::write_safetensors(path, content(3.0f));
    const struct stat st = lstat_of(path);
    CHECK(st.st_uid == uid);
    CHECK(st.st_gid == gid);
    CHECK((st.st_mode & 07777) == 0600u);
    CHECK(first_value(path) == 3.0f);
  } else {
    WARN("not root: replacing a file of another owner is not checked");
  }
  CHECK(entries(d.path) == std::vector<std::string>{"data.idx", "model.safetensors"});
}

TEST_CASE("the writers refuse a read-only OUT and leave it as it was", "[io][files][error]") {
  scratch_dir d("readonly");
  const std::string path = d / "model.safetensors";
  for (unsigned mode : {0444u, 0400u, 0000u}) {
    CAPTURE(mode);
    write_bytes(path, "previous contents");
    REQUIRE(::chmod(path.c_str(), mode) == 0);
    char octal[8];
    std::snprintf(octal, sizeof octal, "%04o", mode);
    CHECK_THAT(io_error_message([&] { io::write_safetensors(path, content(1.0f)); }),
               StartsWith("netmorph::io::write_safetensors: '" + path + "': is read-only (mode " +
                          octal + ")"));
    CHECK_THAT(io_error_message([&] { io::write_idx(path, {1}, {7}); }),
               StartsWith("netmorph::io::write_idx: '" + path + "': is read-only"));
    CHECK(permissions(path) == mode);
    REQUIRE(::chmod(path.c_str(), 0600) == 0);
    CHECK(read_bytes(path) == "previous contents");
  }
  CHECK(entries(d.path) == std::vector<std::string>{"model.safetensors"});
}

TEST_CASE("the writers follow a symbolic link: its target is replaced and the link stays",
          "[io][files]") {
  scratch_dir d("symlink");
  REQUIRE(::mkdir((d / "real").c_str(), 0755) == 0);
  const std::string target = d / "real/model.safetensors";
  io::write_safetensors(target, content(1.0f));
  REQUIRE(::chmod(target.c_str(), 0640) == 0);
  const std::string link = d / "link.safetensors", chain = d / "chain.safetensors";
  REQUIRE(::symlink("real/model.safetensors", link.c_str()) == 0);  // relative to the link
  REQUIRE(::symlink("link.safetensors", chain.c_str()) == 0);

  io::write_safetensors(link, content(2.0f));
  CHECK(S_ISLNK(lstat_of(link).st_mode));
  CHECK(link_target(link) == "real/model.safetensors");
  CHECK(first_value(target) == 2.0f);
  CHECK(permissions(target) == 0640u);

  io::write_safetensors(chain, content(3.0f));  // a link to a link: the final target
  CHECK(S_ISLNK(lstat_of(chain).st_mode));
  CHECK(S_ISLNK(lstat_of(link).st_mode));
  CHECK(first_value(target) == 3.0f);

  // A dangling link is refused: netmorph does not create a link's target.
  const std::string dangling = d / "dangling.safetensors";
  REQUIRE(::symlink("real/missing.safetensors", dangling.c_str()) == 0);
  CHECK_THAT(io_error_message([&] { io::write_safetensors(dangling, content(4.0f)); }),
             StartsWith("netmorph::io::write_safetensors: '" + dangling +
                        "': is a symbolic link to 'real/missing.safetensors', which does not "
                        "exist"));
  CHECK(link_target(dangling) == "real/missing.safetensors");

  // A link to a read-only file: the target's rules apply.
  REQUIRE(::chmod(target.c_str(), 0444) == 0);
  CHECK_THAT(io_error_message([&] { io::write_safetensors(link, content(5.0f)); }),
             Contains("is read-only (mode 0444)"));
  CHECK(first_value(target) == 3.0f);

  CHECK(entries(d.path) == std::vector<std::string>{"chain.safetensors", "dangling.safetensors",
                                                    "link.safetensors", "real"});
  CHECK(entries(d / "real") == std::vector<std::string>{"model.safetensors"});
}

TEST_CASE("an OUT name of up to 255 bytes saves: the temporary name does not grow with it",
          "[io][files]") {
  scratch_dir d("long");
  std::mt19937_64 rng = make_rng(702);
  const nn::model<float> m = every_kind_model<float>(rng);
  for (std::size_t length : {252u, 255u}) {
    CAPTURE(length);
    const std::string name = std::string(length - 12, 'n') + ".safetensors";
    const std::string path = d / name;
    io::save(m, path);  // new
    io::save(m, path);  // replaced
    CHECK(tensors_of(io::load<float>(path)) == tensors_of(m));
    CHECK(entries(d.path) == std::vector<std::string>{name});
    ::unlink(path.c_str());
  }
}

TEST_CASE("a write that fails leaves nothing behind in the directory", "[io][files][error]") {
  scratch_dir d("failed");
  const io::safetensors_content<float> big = content(1.0f, 1 << 14);
  std::signal(SIGXFSZ, SIG_IGN);  // the write fails with EFBIG instead of killing the test
  rlimit old{};
  REQUIRE(::getrlimit(RLIMIT_FSIZE, &old) == 0);
  rlimit small = old;
  small.rlim_cur = 4096;
  REQUIRE(::setrlimit(RLIMIT_FSIZE, &small) == 0);
  const std::string msg =
      io_error_message([&] { io::write_safetensors(d / "new.safetensors", big); });
  ::setrlimit(RLIMIT_FSIZE, &old);
  std::signal(SIGXFSZ, SIG_DFL);
  CHECK_THAT(msg, StartsWith("netmorph::io::write_safetensors: '" + (d / "new.safetensors") +
                             "': writing ") &&
                      Contains("failed (File too large)"));
  CHECK(entries(d.path).empty());
}

namespace {

void kill_self(int) {
  ::kill(::getpid(), SIGKILL);
}

/// Runs write_safetensors(`path`, a 64 KiB content) in a child process that is killed with
/// SIGKILL when the temporary file first grows past 4 KiB (its first buffered write), and returns
/// whether the child died of SIGKILL.
bool write_killed_midway(const std::string& path) {
  const io::safetensors_content<float> big = content(9.0f, 1 << 14);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    rlimit none{0, 0}, small{4096, 4096};
    ::setrlimit(RLIMIT_CORE, &none);
    ::setrlimit(RLIMIT_FSIZE, &small);
    struct sigaction sa {};
    sa.sa_handler = kill_self;
    ::sigaction(SIGXFSZ, &sa, nullptr);
    try {
      io::write_safetensors(path, big);
    } catch (...) {
      ::_exit(2);
    }
    ::_exit(0);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
}

}  // namespace

TEST_CASE("a write killed with SIGKILL midway leaves no file behind", "[io][files]") {
  scratch_dir d("killed");
  // Where the file system has no O_TMPFILE the writers fall back to a named temporary file,
  // ".netmorph-XXXXXX", which a SIGKILL leaves behind (nothing can remove it).
  const bool unnamed = supports_unnamed_temporary(d.path);
  const auto check_left = [&](std::vector<std::string> expected) {
    std::vector<std::string> left = entries(d.path);
    if (!unnamed) {
      WARN("no O_TMPFILE in " << d.path << ": the named fallback is checked");
      CHECK(std::count_if(left.begin(), left.end(), is_fallback_temporary) == 1);
      left.erase(std::remove_if(left.begin(), left.end(), is_fallback_temporary), left.end());
    }
    CHECK(left == expected);
  };
  CHECK(write_killed_midway(d / "new.safetensors"));
  check_left({});

  const std::string old = d / "old.safetensors";
  io::write_safetensors(old, content(1.0f));
  const std::string before = read_bytes(old);
  CHECK(write_killed_midway(old));
  CHECK(read_bytes(old) == before);
  check_left({"old.safetensors"});
}

TEST_CASE("the new file has no name until it is complete (named only in the fallback)",
          "[io][files]") {
  scratch_dir d("unnamed");
  const bool unnamed = supports_unnamed_temporary(d.path);
  if (!unnamed) WARN("no O_TMPFILE in " << d.path << ": only the named fallback is checked");
  const std::string old = d / "old.safetensors", fresh = d / "new.safetensors";
  write_bytes(old, "old");
  REQUIRE(::chmod(old.c_str(), 0640) == 0);
  const std::vector<std::string> before = {"old.safetensors"};
  const auto names_while = [&](const std::string& path, bool named, bool commit) {
    netmorph::io::detail::replacing_file f(path, "test: ", named);
    f.write("new", 3);
    std::vector<std::string> now = entries(d.path);
    if (commit) f.commit();
    return now;
  };
  for (bool commit : {false, true}) {
    CAPTURE(commit);
    if (unnamed) {
      CHECK(names_while(old, false, commit) == before);  // writing: no name in the directory
      CHECK(entries(d.path) == before);
      CHECK(read_bytes(old) == (commit ? "new" : "old"));
      CHECK(permissions(old) == 0640u);
      write_bytes(old, "old");
    }
    // The fallback: a name of the documented pattern while writing, none afterwards.
    std::vector<std::string> now = names_while(old, true, commit);
    CHECK(std::count_if(now.begin(), now.end(), is_fallback_temporary) == 1);
    now.erase(std::remove_if(now.begin(), now.end(), is_fallback_temporary), now.end());
    CHECK(now == before);
    CHECK(entries(d.path) == before);
    CHECK(read_bytes(old) == (commit ? "new" : "old"));
    CHECK(permissions(old) == 0640u);
    write_bytes(old, "old");
  }
  // A new path: linked under its name at once (unnamed) or renamed (fallback).
  for (bool named : {false, true}) {
    CAPTURE(named);
    if (!named && !unnamed) continue;
    std::vector<std::string> now = names_while(fresh, named, true);
    CHECK(std::count_if(now.begin(), now.end(), is_fallback_temporary) == (named ? 1 : 0));
    CHECK(entries(d.path) == std::vector<std::string>{"new.safetensors", "old.safetensors"});
    CHECK(read_bytes(fresh) == "new");
    ::unlink(fresh.c_str());
  }
}

TEST_CASE("the readers refuse an IN that is not a regular file, before reading it",
          "[io][files][error]") {
  scratch_dir d("readers");
  const std::string dir = d / "dir";
  REQUIRE(::mkdir(dir.c_str(), 0755) == 0);
  const std::string fifo = d / "fifo";  // no writer: opening it for reading would block
  REQUIRE(::mkfifo(fifo.c_str(), 0644) == 0);
  const std::string sock = d / "sock";  // open fails (ENXIO): refused by stat, by name
  bound_socket s(sock);
  // A regression blocks on the FIFO: SIGALRM then ends this test program instead of CI's timeout.
  ::alarm(20);
  for (const auto& in : {std::make_pair(dir, "a directory"), std::make_pair(fifo, "a FIFO"),
                         std::make_pair(sock, "a socket")}) {
    const std::string& path = in.first;
    const std::string fault = "': is " + std::string(in.second) + ", not a regular file";
    CAPTURE(path);
    CHECK_THAT(io_error_message([&] { io::read_safetensors<float>(path); }),
               StartsWith("netmorph::io::read_safetensors: '" + path + fault));
    CHECK_THAT(io_error_message([&] { io::load<float>(path); }),
               StartsWith("netmorph::io::load: '" + path + fault));
    CHECK_THAT(io_error_message([&] { io::read_idx(path); }),
               StartsWith("netmorph::io::read_idx: '" + path + fault));
    CHECK_THAT(io_error_message([&] { io::read_idx_images<float>(path); }),
               StartsWith("netmorph::io::read_idx_images: '" + path + fault));
    CHECK_THAT(io_error_message([&] { io::read_idx_labels(path); }),
               StartsWith("netmorph::io::read_idx_labels: '" + path + fault));
  }
  ::alarm(0);
  // A link to a regular file reads as the file.
  const std::string file = d / "model.safetensors", link = d / "link.safetensors";
  io::write_safetensors(file, content(4.0f));
  REQUIRE(::symlink("model.safetensors", link.c_str()) == 0);
  CHECK(first_value(link) == 4.0f);
}

TEST_CASE("a new OUT that appears while the file is written is not replaced",
          "[io][files][error]") {
  scratch_dir d("appeared");
  const bool unnamed = supports_unnamed_temporary(d.path);
  if (!unnamed) WARN("no O_TMPFILE in " << d.path << ": only the named fallback is checked");
  const std::string path = d / "new.safetensors", other = d / "other";
  write_bytes(other, "other");
  const std::vector<std::string> after = {"new.safetensors", "other"};
  const std::string appeared = "test: appeared while the file was written; nothing was replaced";
  for (bool named : {false, true}) {
    CAPTURE(named);
    if (!named && !unnamed) continue;
    {  // a read-only file of its own
      netmorph::io::detail::replacing_file f(path, "test: ", named);
      f.write("new", 3);
      write_bytes(path, "theirs");
      REQUIRE(::chmod(path.c_str(), 0444) == 0);
      CHECK(io_error_message([&] { f.commit(); }) == appeared);
    }
    CHECK(read_bytes(path) == "theirs");
    CHECK(permissions(path) == 0444u);
    CHECK(entries(d.path) == after);  // and no temporary file
    REQUIRE(::unlink(path.c_str()) == 0);
    for (const char* to : {"other", "missing"}) {  // a link, and a dangling one
      CAPTURE(to);
      {
        netmorph::io::detail::replacing_file f(path, "test: ", named);
        f.write("new", 3);
        REQUIRE(::symlink(to, path.c_str()) == 0);
        CHECK(io_error_message([&] { f.commit(); }) == appeared);
      }
      CHECK(S_ISLNK(lstat_of(path).st_mode));
      CHECK(link_target(path) == to);
      CHECK(read_bytes(other) == "other");
      CHECK(entries(d.path) == after);
      REQUIRE(::unlink(path.c_str()) == 0);
    }
  }
}

TEST_CASE("a writer that is not root refuses a file of another owner before writing",
          "[io][files][error]") {
  // Only root can make a file of another owner, and root may replace it (see the mode and owner
  // test): the refusal is checked in a child process that root turns into another user.
  if (::geteuid() != 0) {
    WARN("not root: cannot make a file of another owner, the early refusal is not checked");
    return;
  }
  scratch_dir d("owner");
  REQUIRE(::chmod(d.path.c_str(), 0777) == 0);  // the other user may create files here
  const std::string path = d / "model.safetensors";
  write_bytes(path, "root's");
  REQUIRE(::chmod(path.c_str(), 0666) == 0);  // and may write this one
  const struct stat owner = lstat_of(path);
  int p[2];
  REQUIRE(::pipe(p) == 0);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(p[0]);
    // In the directory first: the other user may not search the test's working directory.
    if (::chdir(d.path.c_str()) != 0 || ::setgroups(0, nullptr) != 0 || ::setgid(23456) != 0 ||
        ::setuid(12345) != 0)
      ::_exit(3);
    std::string what = "constructed: not refused";
    try {
      netmorph::io::detail::replacing_file f("model.safetensors", "test: ");
    } catch (const netmorph::io_error& e) {
      what = e.what();
    } catch (...) {
      what = "another exception";
    }
    const ssize_t n = ::write(p[1], what.data(), what.size());
    ::_exit(n == static_cast<ssize_t>(what.size()) ? 0 : 4);
  }
  ::close(p[1]);
  std::string what;
  char buf[512];
  for (ssize_t n; (n = ::read(p[0], buf, sizeof buf)) > 0;)
    what.append(buf, static_cast<std::size_t>(n));
  ::close(p[0]);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(what == "test: cannot give the new file the owner " + std::to_string(owner.st_uid) + ":" +
                    std::to_string(owner.st_gid) + " of the file it replaces (" +
                    std::strerror(EPERM) + "); the file was left as it was");
  CHECK(read_bytes(path) == "root's");
  CHECK(entries(d.path) == std::vector<std::string>{"model.safetensors"});
}

#if defined(NETMORPH_TEST_FAIL_FCLOSE)
namespace {
bool fail_next_fclose = false;
}  // namespace

// Interposes libc's fclose for this test program: closes the file, then reports a failure once
// when asked (a close that fails after fsync cannot be produced on a local file system).
extern "C" int fclose(std::FILE* f) {
  using fclose_fn = int (*)(std::FILE*);
  static const fclose_fn real = reinterpret_cast<fclose_fn>(::dlsym(RTLD_NEXT, "fclose"));
  const int rc = real(f);
  if (!std::exchange(fail_next_fclose, false)) return rc;
  errno = EIO;
  return EOF;
}

TEST_CASE("a failed close of the new file is reported as a failed write", "[io][files][error]") {
  scratch_dir d("fclose");
  const bool unnamed = supports_unnamed_temporary(d.path);
  for (bool named : {false, true}) {
    for (bool replaces : {false, true}) {
      CAPTURE(named, replaces);
      if (!named && !unnamed) continue;
      const std::string path = d / "model.safetensors";
      if (replaces) write_bytes(path, "old");
      netmorph::io::detail::replacing_file f(path, "test: ", named);
      f.write("new", 3);
      fail_next_fclose = true;
      const std::string msg = io_error_message([&] { f.commit(); });
      CHECK_FALSE(fail_next_fclose);  // the close was the one that failed
      fail_next_fclose = false;
      CHECK(msg == "test: writing the new file failed when it was closed (" +
                       std::string(std::strerror(EIO)) + "); it has its name");
      CHECK(read_bytes(path) == "new");  // named before the close
      ::unlink(path.c_str());
    }
  }
  CHECK(entries(d.path).empty());
}
#endif

#endif  // POSIX
