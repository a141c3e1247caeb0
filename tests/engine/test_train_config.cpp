// test_train_config.cpp: recipe loading — unknown/misspelt keys name the key, file:line and the nearest
// key; type errors; --set overrides; the dump reads back to the same values; the shipped recipes load;
// the input limits (data.max_file_mb, data.max_megapixels) reach the loaders.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "autograd/check.h"
#include "tests/test_util.h"
#include "tools/engine/loaders.h"
#include "tools/engine/train_config.h"

using namespace mo::tools;
using mo::test::error_of;

namespace {
std::string write_tmp(const std::string& name, const std::string& text) {
  std::string p = (std::filesystem::temp_directory_path() / name).string();
  std::ofstream(p) << text;
  return p;
}
}  // namespace

TEST(TrainConfig, DefaultsAreTheOfficialRecipe) {
  TrainConfig c;
  EXPECT_EQ(c.optim.lr, 4e-3);
  EXPECT_EQ(c.optim.weight_decay, 0.05);
  EXPECT_EQ(c.optim.betas, (std::vector<double>{0.9, 0.999}));
  EXPECT_EQ(c.optim.eps, 1e-8);
  EXPECT_EQ(c.train.global_batch, 4096);
  EXPECT_EQ(c.sched.epochs + c.sched.cooldown_epochs, 310);
  EXPECT_EQ(c.data.smoothing, 0.1);
  EXPECT_NO_THROW(c.validate());
}

TEST(TrainConfig, MisspeltKeyNamesLineAndSuggestion) {
  std::string p = write_tmp("mo_cfg_typo.yaml", "model:\n  name: mambaout_femto\noptim:\n  lr: 1e-3\n  wieght_decay: 0.1\n");
  std::string msg = error_of([&] { load_train_config(p, {}); });
  EXPECT_NE(msg.find(p + ":5"), std::string::npos) << msg;
  EXPECT_NE(msg.find("unknown key 'optim.wieght_decay'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean 'optim.weight_decay'"), std::string::npos) << msg;
}

TEST(TrainConfig, KeyInWrongSectionSuggestsTheRightOne) {
  std::string msg = error_of([] {
    TrainConfig c;
    make_schema(c).load_string("train:\n  lr: 0.1\n", "x.yaml");
  });
  EXPECT_NE(msg.find("x.yaml:2: unknown key 'train.lr'; did you mean 'optim.lr'?"), std::string::npos) << msg;
}

TEST(TrainConfig, UnknownSectionAndFarKeyHaveNoSuggestion) {
  std::string msg = error_of([] {
    TrainConfig c;
    make_schema(c).load_string("model:\n  name: x\nzzzzzzzz: 3\n", "y.yaml");
  });
  EXPECT_NE(msg.find("y.yaml:3: unknown key 'zzzzzzzz'"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("did you mean"), std::string::npos) << msg;
}

TEST(TrainConfig, TypeErrorsNameKeyAndLine) {
  TrainConfig c;
  ConfigSchema s = make_schema(c);
  std::string msg = error_of([&] { s.load_string("optim:\n  lr: fast\n", "z.yaml"); });
  EXPECT_NE(msg.find("z.yaml:2: key 'optim.lr': expected a number, got 'fast'"), std::string::npos) << msg;
  msg = error_of([&] { s.load_string("train:\n  batch_size: 12.5\n", "z.yaml"); });
  EXPECT_NE(msg.find("expected an integer"), std::string::npos) << msg;
  msg = error_of([&] { s.load_string("optim:\n  betas: 0.9\n", "z.yaml"); });
  EXPECT_NE(msg.find("expected a list"), std::string::npos) << msg;
  msg = error_of([&] { s.load_string("optim: 3\n", "z.yaml"); });
  EXPECT_NE(msg.find("'optim' is a section"), std::string::npos) << msg;
  msg = error_of([&] { s.load_string("optim:\n  lr: [1\n", "z.yaml"); });
  EXPECT_NE(msg.find("YAML syntax error"), std::string::npos) << msg;
  // Integers: exact past 2^53, whole numbers in other spellings, and the range named (was: a float-to-int
  // conversion out of range, and 2^53 + 1 read as 2^53).
  s.load_string("train: {seed: 9007199254740993, batch_size: 1e3}\n", "z.yaml");
  EXPECT_EQ(c.train.seed, 9007199254740993);
  EXPECT_EQ(c.train.batch_size, 1000);
  msg = error_of([&] { s.load_string("train: {seed: 99999999999999999999}\n", "z.yaml"); });
  EXPECT_NE(msg.find("key 'train.seed': 99999999999999999999 is outside the 64-bit integer range"), std::string::npos) << msg;
  msg = error_of([&] { s.load_string("train: {seed: 1.1e122}\n", "z.yaml"); });
  EXPECT_NE(msg.find("key 'train.seed': expected an integer, got '1.1e122'"), std::string::npos) << msg;
}

TEST(TrainConfig, DuplicateKeysNameBothLines) {
  // Was: the last one silently won.
  TrainConfig c;
  ConfigSchema s = make_schema(c);
  std::string msg = error_of([&] { s.load_string("optim:\n  lr: 1\n  eps: 1\n  lr: 2\n", "d.yaml"); });
  EXPECT_NE(msg.find("d.yaml: duplicate key 'optim.lr' (first at line 2, again at line 4)"), std::string::npos) << msg;
  // The same key spelt with a dot, a repeated section, and a flow mapping.
  msg = error_of([&] { s.load_string("optim: {lr: 1}\noptim.lr: 2\n", "d.yaml"); });
  EXPECT_NE(msg.find("duplicate key 'optim.lr' (first at line 1, again at line 2)"), std::string::npos) << msg;
  msg = error_of([&] { s.load_string("optim: {lr: 1}\ntrain: {}\noptim: {eps: 2}\n", "d.yaml"); });
  EXPECT_NE(msg.find("duplicate key 'optim' (first at line 1, again at line 3)"), std::string::npos) << msg;
  msg = error_of([&] { s.load_string("train: {seed: 1, seed: 2}\n", "d.yaml"); });
  EXPECT_NE(msg.find("duplicate key 'train.seed' (first at line 1, again at line 1)"), std::string::npos) << msg;
  msg = error_of([&] { s.load_string("optim: {lr: 1}\n---\noptim: {lr: 2}\n", "d.yaml"); });
  EXPECT_NE(msg.find("d.yaml:2: a second YAML document (after '---')"), std::string::npos) << msg;
  // Was: YAML::LoadAll looped for ever on a document its parser cannot get past (a CSV file as the recipe).
  for (const char* text : {",epoch,loss\n0,1,2\n", "# a comment\n  , 1\n", "optim: {lr: 1}\n---\n,\n"}) {
    msg = error_of([&] { s.load_string(text, "d.yaml"); });
    EXPECT_TRUE(msg.find("the parser cannot read past it") != std::string::npos ||
                msg.find("a second YAML document") != std::string::npos) << text << ": " << msg;
  }
  msg = error_of([&] { s.load_string("# a comment\n  , 1\n", "d.yaml"); });
  EXPECT_NE(msg.find("d.yaml:2: YAML syntax error at column 3: the parser cannot read past it"), std::string::npos) << msg;
  msg = error_of([&] { s.load_string("? [a, b]\n: 1\n", "d.yaml"); });
  EXPECT_NE(msg.find("d.yaml:1: a key must be a plain name, got '[a, b]'"), std::string::npos) << msg;
  // Distinct keys of one section in two places are fine, and --set still overrides the file.
  TrainConfig ok = load_train_config("", {"optim.lr=0.5", "optim.lr=0.25"});
  EXPECT_EQ(ok.optim.lr, 0.25);
}

TEST(TrainConfig, SetOverridesAndChecks) {
  TrainConfig c = load_train_config("", {"optim.lr=0.5", "optim.betas=[0.8, 0.99]", "model.name=mambaout_kobe",
                                         "sched.per_step=true", "train.output=/tmp/a b"});
  EXPECT_EQ(c.optim.lr, 0.5);
  EXPECT_EQ(c.optim.betas, (std::vector<double>{0.8, 0.99}));
  EXPECT_EQ(c.model.name, "mambaout_kobe");
  EXPECT_TRUE(c.sched.per_step);
  EXPECT_EQ(c.train.output, "/tmp/a b");
  std::string msg = error_of([] { load_train_config("", {"optim.lrr=1"}); });
  EXPECT_NE(msg.find("unknown key 'optim.lrr'; did you mean 'optim.lr'?"), std::string::npos) << msg;
  msg = error_of([] { load_train_config("", {"optim.lr"}); });
  EXPECT_NE(msg.find("expected key=value"), std::string::npos) << msg;
  msg = error_of([] { load_train_config("", {"train.precision=fp16"}); });
  EXPECT_NE(msg.find("'train.precision': 'fp16' is not one of bf16, fp32"), std::string::npos) << msg;
}

TEST(TrainConfig, DumpReadsBackToTheSameValues) {
  TrainConfig a = load_train_config("", {"optim.lr=0.00123", "train.output=out dir/x", "model.init=",
                                         "data.auto_augment=", "sched.warmup_epochs=5"});
  std::string text = dump_train_config(a, true);
  TrainConfig b;
  make_schema(b).load_string(text, "dump");
  EXPECT_EQ(dump_train_config(b), dump_train_config(a));
  EXPECT_EQ(b.optim.lr, 0.00123);
  EXPECT_EQ(b.train.output, "out dir/x");
  EXPECT_EQ(b.sched.warmup_epochs, 5.0);
  EXPECT_EQ(b.data.ratio[1], 4.0 / 3.0);  // doubles print round-trip exact
  // Strings with line breaks, tabs, quotes, backslashes and other control characters (a recipe's
  // double-quoted value may hold them): was, a line break came back as a space.
  TrainConfig c;
  ConfigSchema sc = make_schema(c);
  sc.load_string("train: {output: \"a\\nb\\tc \\\" \\\\ \\x01 \\u00e9 #x\"}\n", "q.yaml");
  EXPECT_EQ(c.train.output, "a\nb\tc \" \\ \x01 \u00e9 #x");
  TrainConfig d;
  make_schema(d).load_string(sc.dump(), "dump");
  EXPECT_EQ(d.train.output, c.train.output);
}

TEST(TrainConfig, ShippedRecipesLoad) {
  const std::string dir = std::string(MO_SOURCE_DIR) + "/recipes/";
  struct R {
    const char* file;
    const char* model;
    double dp;
  };
  for (R r : {R{"femto.yaml", "mambaout_femto", 0.025}, R{"kobe.yaml", "mambaout_kobe", 0.025},
              R{"tiny.yaml", "mambaout_tiny", 0.2}, R{"small.yaml", "mambaout_small", 0.4},
              R{"base.yaml", "mambaout_base", 0.6}}) {
    SCOPED_TRACE(r.file);
    TrainConfig c = load_train_config(dir + r.file, {});
    EXPECT_EQ(c.model.name, r.model);
    EXPECT_EQ(c.model.drop_path_rate, r.dp);
    // Everything but model and data paths equals the official defaults.
    TrainConfig d;
    d.model = c.model;
    d.data.root = c.data.root;
    d.train.output = c.train.output;
    EXPECT_EQ(dump_train_config(c), dump_train_config(d));
  }
  TrainConfig f = load_train_config(dir + "fashion_mnist.yaml", {});
  EXPECT_EQ(f.model.num_classes, 10);
  TrainConfig v = load_train_config(dir + "vit_tiny_fashion_mnist.yaml", {});
  EXPECT_EQ(v.model.name, "vit_tiny_patch4_32");
  EXPECT_EQ(v.model.attention, "full");
  EXPECT_EQ(load_train_config(dir + "vit_tiny_fashion_mnist.yaml", {"model.attention=causal"}).model.attention, "causal");
  const std::string bad = error_of([&] { load_train_config(dir + "vit_tiny_fashion_mnist.yaml", {"model.attention=casual"}); });
  EXPECT_NE(bad.find("config key 'model.attention': 'casual' is not full or causal"), std::string::npos) << bad;
}

TEST(TrainConfig, InputLimitsReachTheLoaders) {
  TrainConfig c =
      load_train_config("", {"data.root=/data", "data.max_file_mb=2", "data.max_megapixels=3", "data.worker_nice=5",
                             "data.prefetch=9"});
  for (const mo::data::LoaderConfig& l : {train_loader_config(c, 0, 1, mo::Device::cpu(), mo::DType::f32),
                                          eval_loader_config(c, 0, 1, mo::Device::cpu(), mo::DType::f32)}) {
    EXPECT_EQ(l.max_file_bytes, 2 << 20);
    EXPECT_EQ(l.max_pixels, 3'000'000);
    EXPECT_EQ(l.worker_nice, 5);
    EXPECT_EQ(l.prefetch_batches, 9);
  }
  EXPECT_EQ(train_loader_config(load_train_config("", {"data.root=/data"}), 0, 1, mo::Device::cpu(), mo::DType::f32)
                .prefetch_batches,
            mo::data::LoaderConfig{}.prefetch_batches);
  // data.synthetic reaches the training loader only: evaluation still reads the folder
  EXPECT_TRUE(train_loader_config(c, 0, 1, mo::Device::cpu(), mo::DType::f32).gpu_high_priority);
  EXPECT_FALSE(train_loader_config(load_train_config("", {"data.root=/data", "data.gpu_priority=normal"}), 0, 1,
                                   mo::Device::cpu(), mo::DType::f32).gpu_high_priority);
  c = load_train_config("", {"data.root=/data", "data.synthetic=true"});
  EXPECT_TRUE(train_loader_config(c, 0, 1, mo::Device::cpu(), mo::DType::f32).synthetic);
  EXPECT_FALSE(eval_loader_config(c, 0, 1, mo::Device::cpu(), mo::DType::f32).synthetic);
  const TrainConfig d;
  EXPECT_EQ(d.data.max_file_mb << 20, mo::data::kDefaultMaxFileBytes);
  EXPECT_EQ(d.data.max_megapixels * 1000000, mo::data::kDefaultMaxPixels);
  for (const auto& [set, says] : std::vector<std::pair<std::string, std::string>>{
           {"data.max_file_mb=0", "config key 'data.max_file_mb' must be in [1, 1048576], got 0"},
           {"data.max_megapixels=5000", "config key 'data.max_megapixels' must be in [1, 4290]"},
           {"data.workers=100000", "config key 'data.workers' must be at most 4096, got 100000"},
           {"data.worker_nice=20", "config key 'data.worker_nice' must be in [0, 19], got 20"},
           {"data.worker_nice=-1", "config key 'data.worker_nice' must be in [0, 19], got -1"},
           {"data.prefetch=1", "config key 'data.prefetch' must be in [2, 64], got 1"},
           {"data.prefetch=65", "config key 'data.prefetch' must be in [2, 64], got 65"}}) {
    const std::string msg = error_of([&] { load_train_config("", {set}); });
    EXPECT_NE(msg.find(says), std::string::npos) << set << ": " << msg;
  }
}

// data.decoder reaches the training loader (eval decodes on the CPU); a wrong value or a misspelt key is
// answered with the nearest one, in a recipe and in --set.
TEST(TrainConfig, DecoderKeyReachesTheTrainLoader) {
  EXPECT_EQ(TrainConfig{}.data.decoder, "cpu");
  for (const auto& [v, want] : std::vector<std::pair<std::string, mo::data::DecodeOn>>{
           {"cpu", mo::data::DecodeOn::cpu}, {"gpu", mo::data::DecodeOn::gpu}, {"auto", mo::data::DecodeOn::automatic}}) {
    TrainConfig c = load_train_config("", {"data.root=/data", "data.decoder=" + v});
    EXPECT_EQ(train_loader_config(c, 0, 1, mo::Device::cpu(), mo::DType::f32).decoder, want) << v;
    EXPECT_EQ(eval_loader_config(c, 0, 1, mo::Device::cpu(), mo::DType::f32).decoder, mo::data::DecodeOn::cpu) << v;
  }
  for (const auto& [set, says] : std::vector<std::pair<std::string, std::string>>{
           {"data.decoder=gpuu", "config key 'data.decoder': 'gpuu' is not one of cpu, gpu, auto; did you mean 'gpu'?"},
           {"data.decoder=Auto", "'Auto' is not one of cpu, gpu, auto; did you mean 'auto'?"},
           {"data.decoder=nvjpeg", "config key 'data.decoder': 'nvjpeg' is not one of cpu, gpu, auto"},
           {"data.decoder=", "config key 'data.decoder': '' is not one of cpu, gpu, auto"},
           {"data.decodr=gpu", "unknown key 'data.decodr'; did you mean 'data.decoder'?"}}) {
    const std::string msg = error_of([&] { load_train_config("", {set}); });
    EXPECT_NE(msg.find(says), std::string::npos) << set << ": " << msg;
  }
  EXPECT_EQ(error_of([&] { load_train_config("", {"data.decoder=nvjpeg"}); }).find("did you mean"), std::string::npos);
  const std::string p = mo::test::tmp_path("mo_cfg_decoder.yaml");
  std::ofstream(p) << "data:\n  decoder: gpu\n  decoderr: cpu\n";
  const std::string msg = error_of([&] { load_train_config(p, {}); });
  EXPECT_NE(msg.find(p + ":3: unknown key 'data.decoderr'; did you mean 'data.decoder'?"), std::string::npos) << msg;
  std::remove(p.c_str());
  EXPECT_NE(error_of([&] {
              TrainConfig c;
              c.data.root = "/data";
              c.data.decoder = "gpux";
              train_loader_config(c, 0, 1, mo::Device::cpu(), mo::DType::f32);
            }).find("config key 'data.decoder': 'gpux' is not cpu, gpu or auto"),
            std::string::npos);
}
