"""Transactional tests: Django flushes (TRUNCATEs) every table and resets sequences after each."""

import pytest
from asgiref.sync import sync_to_async
from django.test import TransactionTestCase

from desk import services
from desk.models import Reporter, Section, Story


class ArchiveTests(TransactionTestCase):
    reset_sequences = True

    def setUp(self):
        self.section = Section.objects.create(name="Archive")
        self.reporter = Reporter.objects.create(name="Archivist")

    def test_first_story_gets_id_one(self):
        story = Story.objects.create(headline="Old", section=self.section, reporter=self.reporter)
        self.assertEqual(story.pk, 1)

    def test_publish_in_transaction(self):
        story = Story.objects.create(headline="Old", section=self.section, reporter=self.reporter)
        services.publish_all([story])
        self.assertTrue(Story.objects.get(pk=story.pk).published)

    def test_sizes(self):
        self.assertEqual(services.section_sizes(Section.objects.all()), {"Archive": 0})


@pytest.mark.django_db(transaction=True)
def test_count_from_a_worker_thread():
    assert services.story_count() == 0


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_story_count_from_async_code():
    # a known leak: thread_sensitive=False runs the count on a fresh executor thread whose
    # connection nobody closes
    assert await sync_to_async(services.story_count, thread_sensitive=False)() == 0
