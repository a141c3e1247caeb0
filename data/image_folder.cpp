// image_folder.cpp: directory scan and the cached index (see image_folder.h).
// Cache format (text): "mo-image-folder-index 1", then "D <mtime_ns> <folder>" for every walked folder,
// "C <class>" per class, "F <label> <relative path>" per file.
#include "data/image_folder.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>

#include "autograd/check.h"

namespace mo::data {
namespace fs = std::filesystem;
namespace {

constexpr const char* kMagic = "mo-image-folder-index 1";

int64_t mtime_ns(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return -1;
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
}

bool is_jpeg_name(const std::string& name) {
  auto dot = name.rfind('.');
  if (dot == std::string::npos) return false;
  std::string ext = name.substr(dot + 1);
  for (char& ch : ext) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return ext == "jpg" || ext == "jpeg";
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
  std::error_code ec;
  MO_CHECK(fs::is_directory(dir_, ec), "ImageFolder: folder '{}' does not exist (expected root/{}/<class>/*.jpg)",
           dir_, split);
  if (use_cache) {
    for (const std::string& f : cache_candidates(root, split))
      if (load_cache(f)) {
        from_cache_ = true;
        cache_file_ = f;
        return;
      }
  }
  scan();
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

void ImageFolder::scan() {
  classes_.clear();
  labels_.clear();
  names_.clear();
  offsets_.clear();
  dirs_.clear();
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir_, fs::directory_options::follow_directory_symlink, ec))
    if (e.is_directory(ec)) classes_.push_back(e.path().filename().string());
  MO_CHECK(!ec, "ImageFolder: cannot list '{}': {}", dir_, ec.message());
  std::sort(classes_.begin(), classes_.end());
  MO_CHECK(!classes_.empty(), "ImageFolder: '{}' has no class folders", dir_);
  dirs_.push_back({".", mtime_ns(dir_)});
  int64_t skipped = 0;
  for (size_t c = 0; c < classes_.size(); ++c) {
    // os.walk order, sorted: folders by path, files by name within a folder.
    std::vector<std::string> folders{classes_[c]};
    for (const auto& e : fs::recursive_directory_iterator(fs::path(dir_) / classes_[c],
                                                          fs::directory_options::follow_directory_symlink, ec))
      if (e.is_directory(ec)) folders.push_back(fs::relative(e.path(), dir_).string());
    MO_CHECK(!ec, "ImageFolder: cannot walk '{}/{}': {}", dir_, classes_[c], ec.message());
    std::sort(folders.begin(), folders.end());
    const size_t before = labels_.size();
    for (const std::string& rel : folders) {
      dirs_.push_back({rel, mtime_ns(dir_ + "/" + rel)});
      std::vector<std::string> files;
      for (const auto& e : fs::directory_iterator(fs::path(dir_) / rel, ec)) {
        if (e.is_directory(ec)) continue;
        std::string name = e.path().filename().string();
        if (is_jpeg_name(name)) files.push_back(std::move(name));
        else ++skipped;
      }
      std::sort(files.begin(), files.end());
      for (const std::string& f : files) {
        offsets_.push_back(names_.size());
        names_ += rel + "/" + f;
        names_.push_back('\0');
        labels_.push_back(static_cast<int32_t>(c));
      }
    }
    MO_CHECK(labels_.size() > before, "ImageFolder: class folder '{}/{}' has no .jpg/.jpeg files", dir_, classes_[c]);
  }
  if (skipped) std::fprintf(stderr, "ImageFolder: %s: ignored %lld files that are not .jpg/.jpeg\n", dir_.c_str(), (long long)skipped);
}

bool ImageFolder::load_cache(const std::string& file) {
  std::ifstream in(file);
  if (!in) return false;
  std::string line;
  if (!std::getline(in, line) || line != kMagic) return false;
  std::vector<std::string> classes;
  std::vector<int32_t> labels;
  std::string names;
  std::vector<uint64_t> offsets;
  std::vector<std::pair<std::string, int64_t>> dirs;
  while (std::getline(in, line)) {
    if (line.size() < 3 || line[1] != ' ') return false;
    const char kind = line[0];
    const std::string rest = line.substr(2);
    if (kind == 'C') {
      classes.push_back(rest);
      continue;
    }
    const size_t sp = rest.find(' ');
    if (sp == std::string::npos) return false;
    const int64_t num = std::strtoll(rest.c_str(), nullptr, 10);
    const std::string name = rest.substr(sp + 1);
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
    for (size_t i = 0; i < labels_.size(); ++i) out << "F " << labels_[i] << " " << (names_.data() + offsets_[i]) << "\n";
    MO_CHECK(out.good(), "ImageFolder: cannot write {}", tmp);
  }
  if (std::rename(tmp.c_str(), cache_file_.c_str()) != 0) {
    std::remove(tmp.c_str());
    MO_FAIL("ImageFolder: cannot rename {} to {}", tmp, cache_file_);
  }
}

}  // namespace mo::data
