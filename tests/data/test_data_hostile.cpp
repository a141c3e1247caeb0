// test_data_hostile.cpp: hostile or careless image trees and files. Named pipes, sockets, devices and
// folders named *.jpg never block a read; a file over the size limit or a header declaring too many
// pixels is refused before it is read, a progressive JPEG with thousands of scans before it costs minutes; link loops and links to other classes list each folder once and
// say what was skipped; folders that cannot be listed are named; a JPEG lacking its tables never borrows
// those of the file decoded before it; a loader whose threads cannot all be
// started fails with a message, not std::terminate.
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <future>
#include <thread>

#include "autograd/check.h"
#include "data/fashion_mnist.h"
#include "data/image_folder.h"
#include "data/loader.h"
#include "tests/data/data_test_util.h"
#include "tests/test_util.h"

using namespace mo;
using namespace mo::data;
using namespace mo::data::testing;
using mo::test::error_of;
using mo::test::tmp_path;

namespace {

// Runs f on a thread. If it has not returned within the bound, it is taken to be blocked on `fifo`: the
// FIFO is opened for writing and closed (which releases a reader waiting in open() or read()) and the
// result is a failure. The bound only detects a hang; a passing run takes milliseconds.
::testing::AssertionResult returns_without_blocking(const std::function<void()>& f, const std::string& fifo) {
  std::promise<void> done;
  std::future<void> fut = done.get_future();
  std::thread t([&] {
    try {
      f();
      done.set_value();
    } catch (...) {
      done.set_exception(std::current_exception());
    }
  });
  bool hung = false;
  while (fut.wait_for(std::chrono::seconds(hung ? 1 : 30)) != std::future_status::ready) {
    hung = true;
    const int fd = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK);
    if (fd >= 0) ::close(fd);
  }
  t.join();
  if (hung) return ::testing::AssertionFailure() << "blocked on " << fifo << " until a writer came";
  fut.get();  // rethrows what f threw
  return ::testing::AssertionSuccess();
}

// Runs f in a forked child and returns what it returned; `status` is the child's wait status. f may
// _exit(n) with n > 0 to say it could not set itself up.
std::string in_child(const std::function<std::string()>& f, int& status) {
  int fds[2];
  if (::pipe(fds) != 0) return "pipe failed";
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    const std::string m = f();
    _exit(::write(fds[1], m.data(), m.size()) == ssize_t(m.size()) ? 0 : 99);
  }
  ::close(fds[1]);
  std::string out;
  char buf[512];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;) out.append(buf, size_t(n));
  ::close(fds[0]);
  ::waitpid(pid, &status, 0);
  return out;
}

// Limits this (child) process's address space to its current size + `headroom` bytes.
void limit_address_space(size_t headroom) {
  long pages = 0;
  std::FILE* s = std::fopen("/proc/self/statm", "r");
  if (!s || std::fscanf(s, "%ld", &pages) != 1) _exit(3);
  std::fclose(s);
  const rlim_t limit = rlim_t(pages) * rlim_t(::sysconf(_SC_PAGESIZE)) + headroom;
  const rlimit rl{limit, limit};
  if (::setrlimit(RLIMIT_AS, &rl) != 0) _exit(4);
}

std::string fresh_dir(const std::string& name) {
  const std::string d = tmp_path(name);
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

void make_fifo(const std::string& path) { ASSERT_EQ(::mkfifo(path.c_str(), 0644), 0) << path << ": " << std::strerror(errno); }

// A listening Unix socket at `path` (closed again: the socket file stays).
void make_socket(const std::string& path) {
  const int s = ::socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(s, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  ASSERT_LT(path.size(), sizeof(a.sun_path)) << path;
  std::strcpy(a.sun_path, path.c_str());
  ASSERT_EQ(::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0) << path << ": " << std::strerror(errno);
  ::close(s);
}

// The first SOF frame header of a JPEG set to w x h.
std::vector<uint8_t> with_frame_size(std::vector<uint8_t> b, int w, int h) {
  for (size_t i = 2; i + 9 < b.size(); ++i)
    if (b[i] == 0xFF && (b[i + 1] == 0xC0 || b[i + 1] == 0xC2)) {
      b[i + 5] = uint8_t(h >> 8), b[i + 6] = uint8_t(h), b[i + 7] = uint8_t(w >> 8), b[i + 8] = uint8_t(w);
      return b;
    }
  ADD_FAILURE() << "no SOF0/SOF2 marker";
  return b;
}

// The stderr of constructing an ImageFolder (no index cache), and the folder.
std::pair<std::string, std::unique_ptr<ImageFolder>> scan(const std::string& root, const std::string& split) {
  ::testing::internal::CaptureStderr();
  std::unique_ptr<ImageFolder> f;
  std::string err;
  try {
    f = std::make_unique<ImageFolder>(root, split, /*use_cache=*/false);
  } catch (const Error& e) {
    err = e.what();
  }
  std::string log = ::testing::internal::GetCapturedStderr();
  return {log + err, std::move(f)};
}

int64_t count_label(const ImageFolder& f, int64_t label) {
  int64_t n = 0;
  for (int64_t i = 0; i < f.size(); ++i) n += f.label(i) == label;
  return n;
}

}  // namespace

TEST(DataHostile, ScanTakesRegularFilesOnly) {
  const std::string root = fresh_dir("hostile_special");
  make_dataset(root, "train", 2, 3, 32, 24);
  const std::string c0 = root + "/train/class_0";
  make_fifo(c0 + "/a_fifo.jpg");
  make_socket(c0 + "/b_sock.jpg");
  fs::create_symlink(c0 + "/missing", c0 + "/c_dangling.jpg");
  fs::create_symlink("/dev/null", c0 + "/d_device.jpg");
  fs::create_symlink("img_0.jpg", c0 + "/e_link.jpg");  // a link to a regular file is a sample
  fs::create_directories(c0 + "/f_folder.jpg");         // a folder named .jpg is a folder, walked
  fs::copy_file(c0 + "/img_1.jpg", c0 + "/f_folder.jpg/inner.jpg");
  fs::copy_file(c0 + "/img_1.jpg", c0 + "/g\nF 0 x.jpg");  // a line break in a name
  std::pair<std::string, std::unique_ptr<ImageFolder>> r;
  ASSERT_TRUE(returns_without_blocking([&] { r = scan(root, "train"); }, c0 + "/a_fifo.jpg"));
  const auto& [log, f] = r;
  ASSERT_TRUE(f) << log;
  EXPECT_EQ(count_label(*f, 0), 5);  // 3 + e_link.jpg + f_folder.jpg/inner.jpg
  EXPECT_EQ(count_label(*f, 1), 3);
  for (int64_t i = 0; i < f->size(); ++i) EXPECT_TRUE(fs::is_regular_file(f->path(i))) << f->path(i);
  EXPECT_NE(log.find("skipped 5 entries that are neither regular files nor folders"), std::string::npos) << log;
  EXPECT_NE(log.find("e.g. " + c0 + "/a_fifo.jpg (a named pipe (FIFO))"), std::string::npos) << log;
  // The index cache keeps the same list and says the same again.
  ::testing::internal::CaptureStderr();
  ImageFolder a(root, "train"), b(root, "train");
  const std::string again = ::testing::internal::GetCapturedStderr();
  EXPECT_TRUE(b.loaded_from_cache());
  ASSERT_EQ(b.size(), f->size());
  for (int64_t i = 0; i < f->size(); ++i) EXPECT_EQ(b.path(i), f->path(i));
  EXPECT_EQ(b.notes(), f->notes());
  ASSERT_EQ(f->notes().size(), 1u);
  EXPECT_EQ(again, f->notes()[0] + "\n" + f->notes()[0] + "\n");
}

TEST(DataHostile, ASplitThatIsNotAFolderIsNamed) {
  const std::string root = fresh_dir("hostile_split");
  make_fifo(root + "/train");
  auto [log, f] = scan(root, "train");
  EXPECT_FALSE(f);
  EXPECT_NE(log.find("ImageFolder: '" + root + "/train' is a named pipe (FIFO), not a folder"), std::string::npos) << log;
}

TEST(DataHostile, ReadingANonRegularFileIsAnErrorNotAWait) {
  const std::string d = fresh_dir("hostile_read");
  make_fifo(d + "/p.jpg");
  make_socket(d + "/s.jpg");
  fs::create_directories(d + "/dir.jpg");
  const std::vector<std::pair<std::string, std::string>> cases = {{d + "/p.jpg", "a named pipe (FIFO), not a regular file"},
                                                                  {d + "/s.jpg", "a socket, not a regular file"},
                                                                  {d + "/dir.jpg", "a directory, not a regular file"},
                                                                  {"/dev/null", "a character device, not a regular file"},
                                                                  {d + "/none.jpg", "cannot open: No such file"}};
  for (const auto& [path, says] : cases) {
    std::vector<uint8_t> bytes;
    std::string e1, e2;
    bool ok1 = true, ok2 = true;
    ASSERT_TRUE(returns_without_blocking([&] {
      ok1 = read_file(path, bytes, e1);
      ok2 = read_image_file(path, bytes, e2);
    }, d + "/p.jpg"));
    EXPECT_FALSE(ok1) << path;
    EXPECT_FALSE(ok2) << path;
    EXPECT_NE(e1.find(says), std::string::npos) << path << ": " << e1;
    EXPECT_EQ(e1, e2);
  }
}

TEST(DataHostile, FileTurnedIntoAFifoAfterTheScanIsReplacedNotAwaited) {
  // The scan saw a regular file; by the time a worker reads it, it is a FIFO (or a stale index lists one).
  const std::string root = fresh_dir("hostile_swap");
  make_dataset(root, "val", 2, 3, 32, 24);
  const std::string victim = root + "/val/class_1/img_2.jpg";
  LoaderConfig c;
  c.root = root;
  c.training = false;
  c.batch_size = 2;
  c.num_threads = 2;
  c.use_cuda = false;
  c.eval.size = 32;
  c.use_index_cache = false;
  Loader l(c);
  fs::remove(victim);
  make_fifo(victim);
  ::testing::internal::CaptureStderr();
  int64_t seen = 0;
  ASSERT_TRUE(returns_without_blocking([&] {
    Batch b;
    while (l.next(b)) seen += b.images.size(0);
  }, victim));
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(seen, 6);
  EXPECT_EQ(l.bad_samples(), 1);
  EXPECT_NE(log.find("skipping " + victim + ": a named pipe (FIFO), not a regular file"), std::string::npos) << log;
}

TEST(DataHostile, FilesOverTheSizeLimitAreRefusedUnread) {
  const std::string d = fresh_dir("hostile_big");
  const std::string big = d + "/x.jpg";
  auto good = slurp(test_photos()[0]);
  {  // a valid JPEG start, then a hole: 1 GiB on paper, a few KiB on disk
    std::ofstream(big, std::ios::binary).write(reinterpret_cast<const char*>(good.data()), 4096);
  }
  fs::resize_file(big, uintmax_t(1) << 30);
  std::vector<uint8_t> bytes;
  std::string err;
  EXPECT_FALSE(read_image_file(big, bytes, err));
  EXPECT_NE(err.find("1073741824 bytes, over the limit of 64 MiB for one file (data.max_file_mb)"), std::string::npos) << err;
  EXPECT_EQ(bytes.capacity(), 0u) << "the file was read (or its buffer allocated) before it was refused";
  EXPECT_FALSE(read_file(big, bytes, err));
  EXPECT_EQ(bytes.capacity(), 0u);
  // The limit is the caller's: a photo of ~30 KiB is refused under 16 KiB and read under the default.
  const std::string photo = test_photos()[0];
  EXPECT_FALSE(read_image_file(photo, bytes, err, {16 << 10, kDefaultMaxPixels}));
  EXPECT_NE(err.find("over the limit of 16384 bytes"), std::string::npos) << err;
  EXPECT_TRUE(read_image_file(photo, bytes, err)) << err;
  EXPECT_EQ(bytes, good);

  // In a loader: counted, named, replaced; never read.
  const std::string root = fresh_dir("hostile_big_folder");
  make_dataset(root, "val", 2, 2, 32, 24);
  fs::rename(big, root + "/val/class_0/x.jpg");
  LoaderConfig c;
  c.root = root;
  c.training = false;
  c.batch_size = 5;
  c.num_threads = 1;
  c.use_cuda = false;
  c.eval.size = 32;
  Loader l(c);
  ::testing::internal::CaptureStderr();
  Batch b;
  ASSERT_TRUE(l.next(b));
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(b.images.size(0), 5);
  EXPECT_EQ(l.bad_samples(), 1);
  EXPECT_NE(log.find("skipping " + root + "/val/class_0/x.jpg: 1073741824 bytes, over the limit"), std::string::npos)
      << log;
}

TEST(DataHostile, HeadersDeclaringTooManyPixelsAreRefusedFirst) {
  const std::string d = fresh_dir("hostile_bomb");
  auto good = slurp(test_photos()[1]);
  // The frame walker agrees with libjpeg on every test photograph (baseline and progressive).
  for (const auto& p : test_photos()) {
    auto b = slurp(p);
    JpegDecoder dec;
    int w = 0, h = 0;
    ASSERT_TRUE(dec.open(b.data(), b.size())) << p;
    ASSERT_TRUE(jpeg_frame_size(b.data(), b.size(), w, h)) << p;
    EXPECT_EQ(w, dec.width()) << p;
    EXPECT_EQ(h, dec.height()) << p;
  }
  // 65500 x 65500 (4.3 gigapixels) in a file of some KiB: refused from the header.
  const std::string bomb = d + "/bomb.jpg";
  write_file(bomb, with_frame_size(good, 65500, 65500));
  std::vector<uint8_t> bytes;
  std::string err;
  EXPECT_FALSE(read_image_file(bomb, bytes, err));
  EXPECT_NE(err.find("the JPEG header declares 65500x65500 pixels, over the limit of 64 megapixels"), std::string::npos)
      << err;
  EXPECT_LE(bytes.size(), size_t(64) << 10) << "read past the header before refusing";
  // The limit is the caller's.
  const std::string wide = d + "/wide.jpg";
  write_file(wide, with_frame_size(good, 9000, 8000));  // 72 megapixels
  EXPECT_FALSE(read_image_file(wide, bytes, err));
  EXPECT_TRUE(read_image_file(wide, bytes, err, {kDefaultMaxFileBytes, 80'000'000})) << err;
  // A frame header behind 200 KiB of APP segments is past the first read: the decoder refuses it instead.
  std::vector<uint8_t> padded(good.begin(), good.begin() + 2);
  for (int k = 0; k < 4; ++k) {
    padded.insert(padded.end(), {0xFF, 0xE5, 0xFF, 0xFF});
    padded.insert(padded.end(), 0xFFFF - 2, uint8_t(k));
  }
  auto rest = with_frame_size(good, 65500, 65500);
  padded.insert(padded.end(), rest.begin() + 2, rest.end());
  write_file(d + "/padded.jpg", padded);
  ASSERT_TRUE(read_image_file(d + "/padded.jpg", bytes, err)) << err;
  JpegDecoder dec;
  EXPECT_FALSE(dec.open(bytes.data(), bytes.size()));
  EXPECT_NE(dec.error().find("absurd image header: 65500x65500"), std::string::npos) << dec.error();
  // Walking corrupt segment lengths never reads out of bounds (one byte at a time, to the end).
  int w, h;
  for (size_t n = 0; n <= 1024; ++n) jpeg_frame_size(good.data(), n, w, h);
  std::vector<uint8_t> junk = {0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x00, 0xFF, 0xC0};
  EXPECT_FALSE(jpeg_frame_size(junk.data(), junk.size(), w, h));
}

TEST(DataHostile, ProgressiveJpegsWithThousandsOfScansAreRefused) {
  // rocket.jpg is progressive (10 scans); its last scan repeated makes a file that libjpeg decodes (with
  // warnings) one whole-image pass per scan.
  auto good = slurp(test_photos()[3]);
  size_t last_sos = 0;
  for (size_t i = 0; i + 1 < good.size(); ++i)
    if (good[i] == 0xFF && good[i + 1] == 0xDA) last_sos = i;
  ASSERT_GT(last_sos, 0u);
  ASSERT_EQ(good[good.size() - 2], 0xFF);
  ASSERT_EQ(good[good.size() - 1], 0xD9);
  auto repeated = [&](int copies) {
    std::vector<uint8_t> b(good.begin(), good.end() - 2);
    for (int k = 0; k < copies; ++k) b.insert(b.end(), good.begin() + std::ptrdiff_t(last_sos), good.end() - 2);
    b.insert(b.end(), {0xFF, 0xD9});
    return b;
  };
  JpegDecoder dec;
  Image out;
  auto ok = repeated(100);  // 110 scans: decoded
  ASSERT_TRUE(dec.open(ok.data(), ok.size()));
  EXPECT_TRUE(dec.decode_full(out)) << dec.error();
  auto bomb = repeated(1000);
  ASSERT_TRUE(dec.open(bomb.data(), bomb.size()));
  EXPECT_FALSE(dec.decode_full(out));
  EXPECT_NE(dec.error().find("more than 500 scans"), std::string::npos) << dec.error();
  ASSERT_TRUE(dec.open(good.data(), good.size()));  // the count starts again with each file
  EXPECT_TRUE(dec.decode_full(out)) << dec.error();
}

TEST(DataHostile, AFileLackingItsTablesDoesNotBorrowThePreviousFilesTables) {
  // A JPEG without its Huffman (DHT) or quantisation (DQT) segments is an abbreviated datastream: a reused
  // libjpeg object would decode it with the tables of the file before. Every file must get the verdict and
  // pixels a fresh decoder gives it, whichever file the decoder read before.
  auto strip = [](const std::vector<uint8_t>& f, uint8_t marker) {  // drops every segment of that marker before SOS
    std::vector<uint8_t> o(f.begin(), f.begin() + 2);
    size_t i = 2;
    while (i + 4 <= f.size() && f[i] == 0xFF && f[i + 1] != 0xDA) {
      const size_t len = size_t(f[i + 2]) << 8 | f[i + 3];
      if (f[i + 1] != marker) o.insert(o.end(), f.begin() + std::ptrdiff_t(i), f.begin() + std::ptrdiff_t(i + 2 + len));
      i += 2 + len;
    }
    o.insert(o.end(), f.begin() + std::ptrdiff_t(i), f.end());
    return o;
  };
  auto outcome = [](JpegDecoder& d, const std::vector<uint8_t>& f) {
    Image im;
    const bool ok = d.open(f.data(), f.size()) && d.decode_full(im);
    return std::pair{ok, ok ? std::vector<uint8_t>(im.data(), im.data() + im.bytes()) : std::vector<uint8_t>()};
  };
  int checked = 0, gpu_files = 0;
  for (const auto& photo : test_photos()) {
    const auto good = slurp(photo);
    for (uint8_t marker : {uint8_t(0xC4), uint8_t(0xDB)}) {
      const auto bad = strip(good, marker);
      if (bad.size() == good.size()) continue;  // none to strip
      JpegDecoder fresh, used;
      const auto want = outcome(fresh, bad);
      // the GPU decoder gets only files that define their tables: this one is left to libjpeg
      ASSERT_TRUE(fresh.open(good.data(), good.size()));
      const bool good_gpu = fresh.gpu_decodable();
      EXPECT_FALSE(fresh.open(bad.data(), bad.size()) && fresh.gpu_decodable()) << photo << " without marker " << int(marker);
      for (const auto& other : test_photos()) {
        const auto before = slurp(other);
        ASSERT_TRUE(outcome(used, before).first) << other;
        const auto got = outcome(used, bad);
        EXPECT_EQ(got.first, want.first) << photo << " without marker " << int(marker) << " after " << other;
        EXPECT_TRUE(got.second == want.second) << photo << " without marker " << int(marker) << " after " << other;
        ++checked;
      }
      if (marker == 0xDB) EXPECT_FALSE(want.first) << photo << ": no quantisation tables, yet decoded";
      gpu_files += good_gpu;
    }
  }
  EXPECT_GE(checked, 8);
  EXPECT_GE(gpu_files, 1);  // some photos are baseline YCbCr, which the GPU decoder takes whole
}

TEST(DataHostile, LinkLoopsAndLinksToOtherClassesAreListedOnce) {
  const std::string root = fresh_dir("hostile_links");
  make_dataset(root, "train", 3, 2, 32, 24);
  const std::string t = root + "/train";
  fs::create_symlink(".", t + "/class_0/loop");                     // a loop onto its own folder
  fs::create_directories(t + "/class_0/sub");
  fs::copy_file(t + "/class_0/img_0.jpg", t + "/class_0/sub/s.jpg");
  fs::create_symlink("../..", t + "/class_0/sub/up");               // a loop onto the split
  fs::create_symlink("../class_2", t + "/class_1/also_2");          // another class
  fs::create_symlink("../class_0/sub", t + "/class_1/sub_of_0");    // a folder of another class
  const std::string extra = fresh_dir("hostile_links_extra");       // outside the tree: followed once
  fs::copy_file(t + "/class_2/img_0.jpg", extra + "/e.jpg");
  fs::create_symlink(extra, t + "/class_2/ext_a");
  fs::create_symlink(extra, t + "/class_2/ext_b");
  auto [log, f] = scan(root, "train");
  ASSERT_TRUE(f) << log;
  EXPECT_EQ(f->num_classes(), 3);
  EXPECT_EQ(count_label(*f, 0), 3);  // img_0, img_1, sub/s.jpg
  EXPECT_EQ(count_label(*f, 1), 2);
  EXPECT_EQ(count_label(*f, 2), 3);  // img_0, img_1, ext_a/e.jpg
  EXPECT_EQ(f->path(f->size() - 1), t + "/class_2/ext_a/e.jpg");
  EXPECT_NE(log.find("skipped 5 links to folders already listed"), std::string::npos) << log;
  EXPECT_NE(log.find("e.g. " + t + "/class_0/loop (the folder " + t + "/class_0)"), std::string::npos) << log;
  // The index cache gives the same list and the same notes.
  ::testing::internal::CaptureStderr();
  ImageFolder a(root, "train"), b(root, "train");
  ::testing::internal::GetCapturedStderr();
  EXPECT_TRUE(b.loaded_from_cache());
  ASSERT_EQ(a.size(), f->size());
  ASSERT_EQ(b.size(), f->size());
  for (int64_t i = 0; i < f->size(); ++i) EXPECT_EQ(b.path(i), f->path(i));
  EXPECT_EQ(b.notes(), f->notes());
  // Moved elsewhere, the index still holds and its notes name the new place.
  const std::string moved = tmp_path("hostile_links_moved");
  fs::remove_all(moved);
  fs::rename(root, moved);
  ::testing::internal::CaptureStderr();
  ImageFolder m(moved, "train");
  const std::string said = ::testing::internal::GetCapturedStderr();
  EXPECT_TRUE(m.loaded_from_cache());
  EXPECT_NE(said.find("e.g. " + moved + "/train/class_0/loop (the folder " + moved + "/train/class_0)"),
            std::string::npos) << said;
  EXPECT_EQ(said.find(root + "/"), std::string::npos) << said;
  fs::rename(moved, root);
  // Two class names for one folder cannot be numbered: an error naming both.
  fs::create_symlink("class_1", t + "/class_3");
  auto [log2, g] = scan(root, "train");
  EXPECT_FALSE(g);
  EXPECT_NE(log2.find("class folder '" + t + "/class_3' is the same folder as '" + t + "/class_1'"), std::string::npos)
      << log2;
}

TEST(DataHostile, FoldersThatCannotBeListedAreNamed) {
  const std::string root = fresh_dir("hostile_perm");
  make_dataset(root, "train", 2, 2, 32, 24);
  const std::string locked = root + "/train/class_1/locked";
  fs::create_directories(locked);
  ::chmod(locked.c_str(), 0);
  const std::string img = root + "/train/class_0/img_0.jpg";
  ::chmod(img.c_str(), 0);
  const std::string closed = fresh_dir("hostile_perm_root");  // root/train cannot even be looked up
  fs::create_directories(closed + "/train/a");
  ::chmod(closed.c_str(), 0);
  // The three messages, one a line.
  auto messages = [&] {
    std::vector<uint8_t> b;
    std::string e;
    read_image_file(img, b, e);
    return error_of([&] { ImageFolder f(root, "train", false); }) + "\n" + e + "\n" +
           error_of([&] { ImageFolder f(closed, "train", false); });
  };
  // Root reads any folder: check as the unprivileged user nobody, in a child process.
  std::string out;
  int status = 0;
  if (::geteuid() != 0) {
    out = messages();
  } else {
    out = in_child([&] {
      if (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0) _exit(3);
      return messages();
    }, status);
  }
  const bool ran = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  ::chmod(locked.c_str(), 0755);
  ::chmod(closed.c_str(), 0755);
  if (!ran) GTEST_SKIP() << "running as root and cannot switch to user nobody: permissions cannot be tested";
  EXPECT_NE(out.find("ImageFolder: cannot list folder '" + locked + "': Permission denied"), std::string::npos) << out;
  EXPECT_NE(out.find("\ncannot open: Permission denied\n"), std::string::npos) << out;
  EXPECT_NE(out.find("ImageFolder: cannot read folder '" + closed + "/train': Permission denied"), std::string::npos)
      << out;
}

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define MO_NO_ADDRESS_LIMIT 1  // a sanitizer's shadow memory does not fit under an address-space limit
#endif

// A real failure of std::thread: in a child process, an address-space limit that leaves room for a few
// thread stacks only (RLIMIT_NPROC would do too, but root is exempt from it). 4000 stacks of 8 MiB (or
// 2 MiB) do not fit in 256 MiB more.
TEST(DataHostile, LoaderThreadsThatCannotStartAreAnError) {
#ifdef MO_NO_ADDRESS_LIMIT
  GTEST_SKIP() << "an address-space limit cannot be set under a sanitizer";
#endif
  const std::string root = fresh_dir("hostile_threads");
  make_dataset(root, "val", 2, 2, 32, 24);
  int status = 0;
  const std::string out = in_child([&] {
    LoaderConfig c;
    c.root = root;
    c.training = false;
    c.batch_size = 2;
    c.num_threads = 4000;
    c.use_cuda = false;
    c.eval.size = 32;
    auto ds = std::make_shared<ImageFolder>(root, "val", false);
    limit_address_space(size_t(256) << 20);
    return error_of([&] { Loader l(c, ds); });
  }, status);
  ASSERT_TRUE(WIFEXITED(status)) << "the child died of signal " << WTERMSIG(status) << " (std::terminate?)";
  ASSERT_EQ(WEXITSTATUS(status), 0);
  EXPECT_NE(out.find("data loader: cannot start 4000 loader threads ("), std::string::npos) << out;
  EXPECT_NE(out.find("lower data.workers"), std::string::npos) << out;
}

TEST(DataHostile, PrepareThreadsThatCannotStartAreAnError) {
#ifdef MO_NO_ADDRESS_LIMIT
  GTEST_SKIP() << "an address-space limit cannot be set under a sanitizer";
#endif
  const std::string src = fresh_dir("hostile_prepare_src");
  auto idx = [&](const std::string& name, std::vector<int> dims) {  // plain (not gzip'ed) IDX of zeros
    std::vector<uint8_t> b{0, 0, 8, uint8_t(dims.size())};
    size_t n = 1;
    for (int d : dims) b.insert(b.end(), {0, 0, uint8_t(d >> 8), uint8_t(d)}), n *= size_t(d);
    b.resize(b.size() + n, 0);
    write_file(src + "/" + name, b);
  };
  idx("train-images-idx3-ubyte", {4, 28, 28});
  idx("train-labels-idx1-ubyte", {4});
  idx("t10k-images-idx3-ubyte", {2, 28, 28});
  idx("t10k-labels-idx1-ubyte", {2});
  PrepareOptions o;
  o.src = src;
  o.out = fresh_dir("hostile_prepare_out");
  o.size = 8;
  o.threads = 4000;
  int status = 0;
  const std::string out = in_child([&] {
    limit_address_space(size_t(256) << 20);
    return error_of([&] { prepare_fashion_mnist(o); });
  }, status);
  ASSERT_TRUE(WIFEXITED(status)) << "the child died of signal " << WTERMSIG(status) << " (std::terminate?)";
  ASSERT_EQ(WEXITSTATUS(status), 0);
  EXPECT_NE(out.find("mo_prepare fashion-mnist: cannot start 4000 threads ("), std::string::npos) << out;
  EXPECT_NE(out.find("lower --threads"), std::string::npos) << out;
}
