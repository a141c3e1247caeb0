// image_folder.h: torchvision ImageFolder over image files: root/<split>/<class>/**/*.jpg (also .jpeg,
// .png and .webp, any case; the decoder goes by the file's bytes, not its name). Classes are the sub-folders sorted by name and numbered in that order; files are listed
// folder by folder in sorted order (os.walk sorted, as torchvision does). Listing a million files takes
// a while, so the index is cached in root/.mo_index_<split>.txt (or, where root is read-only, in
// $XDG_CACHE_HOME/mo or ~/.cache/mo) together with the modification time of every folder it walked:
// adding, removing or renaming a file or class changes a folder's time and the index is rebuilt.
// Hostile or careless trees: only regular files are samples (named pipes, sockets, devices and broken
// links are skipped, counted and one named on stderr); every real folder is walked once, so a link loop
// (class/loop -> .) or a link to another class is skipped and reported instead of repeating files
// (each time the folder is opened, from the cache too).
// A missing split folder, one without classes, a class without image files, two class names for one
// folder, or a folder that cannot be listed (permissions) is an error naming it.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace mo::data {

class ImageFolder {
 public:
  ImageFolder(const std::string& root, const std::string& split, bool use_cache = true);
  int64_t size() const { return static_cast<int64_t>(labels_.size()); }
  int num_classes() const { return static_cast<int>(classes_.size()); }
  const std::vector<std::string>& classes() const { return classes_; }
  std::string path(int64_t i) const;  // full path of sample i
  int64_t label(int64_t i) const { return labels_[static_cast<size_t>(i)]; }
  const std::string& folder() const { return dir_; }  // root/split
  bool loaded_from_cache() const { return from_cache_; }
  const std::string& cache_file() const { return cache_file_; }  // where the index was read or written
  // What the scan left out (counts and an example), printed on stderr by the constructor, again when the
  // index comes from the cache.
  const std::vector<std::string>& notes() const { return notes_; }

 private:
  bool load_cache(const std::string& file);
  void scan();
  void save_cache();

  std::string dir_;
  std::vector<std::string> classes_;
  std::vector<int32_t> labels_;
  std::string names_;                // relative paths, '\0'-separated
  std::vector<uint64_t> offsets_;    // start of each path in names_
  std::vector<std::pair<std::string, int64_t>> dirs_;  // walked folders (relative) and their mtime (ns)
  std::vector<std::string> notes_;
  bool from_cache_ = false;
  std::string cache_file_, split_;
};

}  // namespace mo::data
