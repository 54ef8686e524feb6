from django.db import models


class Section(models.Model):
    name = models.CharField(max_length=50, unique=True)


class Reporter(models.Model):
    name = models.CharField(max_length=100)
    email = models.EmailField(blank=True)


class Beat(models.Model):
    reporter = models.OneToOneField(Reporter, on_delete=models.CASCADE, related_name="beat")
    topic = models.CharField(max_length=100)


class Tag(models.Model):
    name = models.CharField(max_length=50, unique=True)


class Story(models.Model):
    headline = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    section = models.ForeignKey(Section, on_delete=models.CASCADE, related_name="stories")
    reporter = models.ForeignKey(Reporter, on_delete=models.CASCADE, related_name="stories")
    tags = models.ManyToManyField(Tag, blank=True, related_name="stories")
    published = models.BooleanField(default=False)
    slug = models.SlugField(blank=True)
