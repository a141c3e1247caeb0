// image_folder.cpp: directory scan and the cached index (see image_folder.h).
// Cache format (text): "mo-image-folder-index 3", then "D <mtime_ns> <folder>" for every walked folder,
// "C <class>" per class, "N <text>" per note of the scan (what it left out; the folder's path written as
// a NUL byte), "F <label> <relative path>" per file.
#include "data/image_folder.h"

#include "autograd/parse.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string_view>

#include "autograd/check.h"
#include "data/image_decode.h"
#include "data/jpeg.h"

namespace mo::data {
namespace fs = std::filesystem;
namespace {

constexpr const char* kMagic = "mo-image-folder-index 3";  // 2: walked with loop detection; 3: PNG, WebP

int64_t mtime_ns(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return -1;
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
}

// A path the index may name: relative, below the folder (no '.' or '..' component, no empty one).
bool below_root(const std::string& rel) {
  if (rel.empty() || rel[0] == '/') return false;
  for (size_t a = 0; a <= rel.size();) {
    const size_t b = std::min(rel.find('/', a), rel.size());
    const std::string_view c(rel.data() + a, b - a);
    if (c.empty() || c == "." || c == "..") return false;
    a = b + 1;
  }
  return true;
}

std::vector<std::string> cache_candidates(const std::string& root, const std::string& split) {
  std::vector<std::string> v{(fs::path(root) / (".mo_index_" + split + ".txt")).string()};
  std::string base;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) base = x;
  else if (const char* h = std::getenv("HOME"); h && *h) base = std::string(h) + "/.cache";
  if (!base.empty()) {
    std::string key = fs::absolute(root).lexically_normal().string();
    for (char& ch : key)
      if (ch == '/') ch = '_';
    v.push_back(base + "/mo/index" + key + "_" + split + ".txt");
  }
  return v;
}

}  // namespace

ImageFolder::ImageFolder(const std::string& root, const std::string& split, bool use_cache) : split_(split) {
  dir_ = (fs::path(root) / split).string();
  struct stat st;
  if (::stat(dir_.c_str(), &st) != 0) {
    const int e = errno;
    MO_CHECK(e == ENOENT || e == ENOTDIR, "ImageFolder: cannot read folder '{}': {}", dir_, std::strerror(e));
    MO_FAIL("ImageFolder: folder '{}' does not exist (expected root/{}/<class>/*.jpg)", dir_, split);
  }
  MO_CHECK(S_ISDIR(st.st_mode), "ImageFolder: '{}' is {}, not a folder (expected root/{}/<class>/*.jpg)", dir_,
           file_kind(st.st_mode), split);
  if (use_cache) {
    for (const std::string& f : cache_candidates(root, split))
      if (load_cache(f)) {
        from_cache_ = true;
        cache_file_ = f;
        for (const std::string& n : notes_) std::fprintf(stderr, "%s\n", n.c_str());
        return;
      }
  }
  scan();
  for (const std::string& n : notes_) std::fprintf(stderr, "%s\n", n.c_str());
  if (use_cache) {
    for (const std::string& f : cache_candidates(root, split)) {
      cache_file_ = f;
      try {
        save_cache();
        return;
      } catch (const Error&) {
        cache_file_.clear();  // not writable here: try the next place
      }
    }
    std::fprintf(stderr, "warning: ImageFolder: could not write an index cache for '%s'\n", dir_.c_str());
  }
}

std::string ImageFolder::path(int64_t i) const {
  MO_CHECK(i >= 0 && i < size(), "ImageFolder: sample {} outside [0, {})", i, size());
  return dir_ + "/" + std::string(names_.data() + offsets_[static_cast<size_t>(i)]);
}

namespace {

// One entry of a folder. readdir's type spares a stat() for plain files and folders; links (and file
// systems that give no type) are followed with fstatat.
struct Entry {
  enum Kind { file, folder, link_to_folder, other } kind = other;
  std::string name;
  std::pair<dev_t, ino_t> id{};  // folders: which real folder it is
  std::string what;              // other: what it is
};

std::vector<Entry> list_folder(const std::string& path) {
  DIR* d = ::opendir(path.c_str());
  MO_CHECK(d != nullptr, "ImageFolder: cannot list folder '{}': {}", path, std::strerror(errno));
  std::vector<Entry> v;
  errno = 0;
  while (const dirent* de = ::readdir(d)) {
    Entry e;
    e.name = de->d_name;
    if (e.name == "." || e.name == "..") continue;
    struct stat st;
    if (e.name.find('\n') != std::string::npos) {  // would break the index's lines
      e.what = "a name with a line break";
      for (size_t p; (p = e.name.find('\n')) != std::string::npos;) e.name.replace(p, 1, "\\n");
    } else if (de->d_type == DT_REG) {
      e.kind = Entry::file;
    } else if (de->d_type != DT_DIR && de->d_type != DT_LNK && de->d_type != DT_UNKNOWN) {
      e.what = file_kind(DTTOIF(de->d_type));
    } else if (::fstatat(::dirfd(d), de->d_name, &st, 0) != 0) {
      e.what = errno == ENOENT ? "a broken link" : errno == ELOOP ? "a link loop" : std::strerror(errno);
    } else if (S_ISREG(st.st_mode)) {
      e.kind = Entry::file;
    } else if (S_ISDIR(st.st_mode)) {
      struct stat lst;
      const bool link = de->d_type == DT_LNK ||
                        (de->d_type == DT_UNKNOWN && ::fstatat(::dirfd(d), de->d_name, &lst, AT_SYMLINK_NOFOLLOW) == 0 &&
                         S_ISLNK(lst.st_mode));
      e.kind = link ? Entry::link_to_folder : Entry::folder;
      e.id = {st.st_dev, st.st_ino};
    } else {
      e.what = file_kind(st.st_mode);
    }
    v.push_back(std::move(e));
    errno = 0;
  }
  const int err = errno;
  ::closedir(d);
  MO_CHECK(err == 0, "ImageFolder: cannot list folder '{}': {}", path, std::strerror(err));
  std::sort(v.begin(), v.end(), [](const Entry& a, const Entry& b) { return a.name < b.name; });
  return v;
}

// Entries the scan left out of one kind: how many, and the first as an example.
struct Skipped {
  int64_t count = 0;
  std::string example;
  void add(const std::string& e) {
    if (count++ == 0) example = e;
  }
};

}  // namespace

void ImageFolder::scan() {
  classes_.clear();
  labels_.clear();
  names_.clear();
  offsets_.clear();
  dirs_.clear();
  notes_.clear();
  // Every real folder is listed once, under the first path that reaches it: plain folders before links,
  // so a link to a folder already listed (a loop such as class/loop -> ., or a link to another class) is
  // skipped and reported instead of listing its files again.
  std::map<std::pair<dev_t, ino_t>, std::string> seen;  // real folder -> the path it is listed under
  Skipped special, repeats;
  int64_t ignored = 0;
  struct stat st;
  MO_CHECK(::stat(dir_.c_str(), &st) == 0, "ImageFolder: cannot read folder '{}': {}", dir_, std::strerror(errno));
  seen[{st.st_dev, st.st_ino}] = ".";
  dirs_.push_back({".", mtime_ns(dir_)});
  for (const Entry& e : list_folder(dir_)) {
    if (e.kind == Entry::other) special.add(fmt::format("{}/{} ({})", dir_, e.name, e.what));
    if (e.kind != Entry::folder && e.kind != Entry::link_to_folder) continue;
    auto [it, fresh] = seen.emplace(e.id, e.name);
    MO_CHECK(fresh, "ImageFolder: class folder '{}/{}' is the same folder as '{}/{}' (a link): remove one", dir_,
             e.name, dir_, it->second);
    classes_.push_back(e.name);
  }
  MO_CHECK(!classes_.empty(), "ImageFolder: '{}' has no class folders", dir_);

  struct Folder {
    std::string rel;
    std::vector<std::string> files;
  };
  std::vector<std::vector<Folder>> folders(classes_.size());
  std::vector<std::vector<std::pair<std::string, std::pair<dev_t, ino_t>>>> links(classes_.size());
  // Lists `rel` and, depth first, the plain folders under it; links to folders are queued in links[c].
  auto walk = [&](size_t c, const std::string& top) {
    std::vector<std::string> pending{top};  // folders still to list
    while (!pending.empty()) {
      const std::string rel = std::move(pending.back());
      pending.pop_back();
      const std::string path = dir_ + "/" + rel;
      dirs_.push_back({rel, mtime_ns(path)});
      Folder f{rel, {}};
      for (const Entry& e : list_folder(path)) {
        const std::string sub = rel + "/" + e.name;
        if (e.kind == Entry::file) {
          if (is_image_name(e.name)) f.files.push_back(e.name);
          else ++ignored;
        } else if (e.kind == Entry::other) {
          special.add(fmt::format("{}/{} ({})", dir_, sub, e.what));
        } else if (e.kind == Entry::link_to_folder) {
          links[c].push_back({sub, e.id});
        } else if (auto [it, fresh] = seen.emplace(e.id, sub); fresh) {
          pending.push_back(sub);
        } else {  // a plain folder seen before: a bind mount of a listed one
          repeats.add(fmt::format("{}/{} (the folder {}/{})", dir_, sub, dir_, it->second));
        }
      }
      folders[c].push_back(std::move(f));
    }
  };
  for (size_t c = 0; c < classes_.size(); ++c) walk(c, classes_[c]);
  for (size_t c = 0; c < classes_.size(); ++c)
    for (size_t i = 0; i < links[c].size(); ++i) {  // walk() may append more
      const auto [rel, id] = links[c][i];
      if (auto [it, fresh] = seen.emplace(id, rel); fresh) walk(c, rel);
      else repeats.add(fmt::format("{}/{} (the folder {}/{})", dir_, rel, dir_, it->second));
    }

  for (size_t c = 0; c < classes_.size(); ++c) {
    // os.walk order, sorted: folders by path, files by name within a folder.
    std::sort(folders[c].begin(), folders[c].end(), [](const Folder& a, const Folder& b) { return a.rel < b.rel; });
    const size_t before = labels_.size();
    for (Folder& f : folders[c]) {
      std::sort(f.files.begin(), f.files.end());
      for (const std::string& name : f.files) {
        offsets_.push_back(names_.size());
        names_ += f.rel + "/" + name;
        names_.push_back('\0');
        labels_.push_back(static_cast<int32_t>(c));
      }
    }
    MO_CHECK(labels_.size() > before, "ImageFolder: class folder '{}/{}' has no image files (.jpg, .jpeg, .png, .webp)", dir_, classes_[c]);
  }
  if (ignored) notes_.push_back(fmt::format("ImageFolder: {}: ignored {} files that are not images (.jpg, .jpeg, .png, .webp)", dir_, ignored));
  if (special.count)
    notes_.push_back(fmt::format("warning: ImageFolder: {}: skipped {} entries that are neither regular files nor "
                                 "folders (named pipes, sockets, devices, broken links), e.g. {}",
                                 dir_, special.count, special.example));
  if (repeats.count)
    notes_.push_back(fmt::format("warning: ImageFolder: {}: skipped {} links to folders already listed (each folder "
                                 "is read once), e.g. {}", dir_, repeats.count, repeats.example));
}

bool ImageFolder::load_cache(const std::string& file) {
  std::vector<uint8_t> bytes;  // read_file: a named pipe in the cache's place cannot block the scan
  std::string err;
  if (!read_file(file, bytes, err, int64_t(4) << 30)) return false;
  std::istringstream in(std::string(bytes.begin(), bytes.end()));
  std::string line;
  if (!std::getline(in, line) || line != kMagic) return false;
  std::vector<std::string> classes;
  std::vector<int32_t> labels;
  std::string names;
  std::vector<uint64_t> offsets;
  std::vector<std::pair<std::string, int64_t>> dirs;
  std::vector<std::string> notes;
  while (std::getline(in, line)) {
    if (line.size() < 3 || line[1] != ' ') return false;
    const char kind = line[0];
    const std::string rest = line.substr(2);
    if (kind == 'C' || kind == 'N') {
      (kind == 'C' ? classes : notes).push_back(rest);
      continue;
    }
    const size_t sp = rest.find(' ');
    if (sp == std::string::npos) return false;
    const std::optional<int64_t> parsed = parse_int(std::string_view(rest).substr(0, sp));
    if (!parsed) return false;  // a damaged index: rebuild it
    const int64_t num = *parsed;
    const std::string name = rest.substr(sp + 1);
    if (!(kind == 'D' && name == ".") && !below_root(name)) return false;  // names a file outside the folder
    if (kind == 'D') {
      if (mtime_ns(dir_ + "/" + name) != num) return false;  // the folder changed: rebuild
      dirs.push_back({name, num});
    } else if (kind == 'F') {
      if (num < 0 || num >= static_cast<int64_t>(classes.size())) return false;
      offsets.push_back(names.size());
      names += name;
      names.push_back('\0');
      labels.push_back(static_cast<int32_t>(num));
    } else {
      return false;
    }
  }
  if (classes.empty() || labels.empty() || dirs.empty()) return false;
  // A new folder inside a listed one changes the listed one's mtime, so the D lines cover additions.
  classes_ = std::move(classes);
  labels_ = std::move(labels);
  names_ = std::move(names);
  offsets_ = std::move(offsets);
  dirs_ = std::move(dirs);
  for (std::string& n : notes)  // the folder's path, which the index leaves out (see save_cache)
    for (size_t p; (p = n.find('\0')) != std::string::npos;) n.replace(p, 1, dir_);
  notes_ = std::move(notes);
  return true;
}

void ImageFolder::save_cache() {
  std::error_code ec;
  fs::create_directories(fs::path(cache_file_).parent_path(), ec);
  const std::string tmp = cache_file_ + ".tmp" + std::to_string(::getpid());
  {
    std::ofstream out(tmp);
    MO_CHECK(out.good(), "ImageFolder: cannot write {}", tmp);
    out << kMagic << "\n";
    for (const auto& [d, t] : dirs_) out << "D " << t << " " << d << "\n";
    for (const auto& c : classes_) out << "C " << c << "\n";
    for (std::string n : notes_) {  // the folder's path as a NUL (no path holds one): the data set may move
      for (size_t p; (p = n.find(dir_)) != std::string::npos;) n.replace(p, dir_.size(), 1, '\0');
      out << "N " << n << "\n";
    }
    for (size_t i = 0; i < labels_.size(); ++i) out << "F " << labels_[i] << " " << (names_.data() + offsets_[i]) << "\n";
    MO_CHECK(out.good(), "ImageFolder: cannot write {}", tmp);
  }
  if (std::rename(tmp.c_str(), cache_file_.c_str()) != 0) {
    std::remove(tmp.c_str());
    MO_FAIL("ImageFolder: cannot rename {} to {}", tmp, cache_file_);
  }
}

}  // namespace mo::data
